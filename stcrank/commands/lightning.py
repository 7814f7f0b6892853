"""``stcrank fit|validate|test|predict``: stock LightningCLI over stcrank's tasks and data modules."""

from __future__ import annotations

import importlib
import sys
from typing import Any

from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from stcrank import registry
from stcrank.commands.checkpoint_settings import merge_checkpoint_hparams
from stcrank.data.base import BaseDataModule
from stcrank.io import writing
from stcrank.tasks.base import BaseTask


class StcrankCLI(LightningCLI):
    """LightningCLI in subclass mode for the task (model) and the data module.

    Any :class:`~stcrank.tasks.base.BaseTask` is a valid ``model`` and any
    :class:`~stcrank.data.base.BaseDataModule` a valid ``data``; the data module's ``feature_sizes`` are linked
    into the task when both are built.

    Args:
        only_subcommand: Build the parser of this subcommand only (``fit``...), as the command line knows which
            one runs; each subcommand's parser costs a noticeable share of start-up. All of them when None.
    """

    def __init__(self, *args: Any, only_subcommand: str | None = None, **kwargs: Any) -> None:
        self.only_subcommand = only_subcommand
        super().__init__(*args, **kwargs)

    def subcommands(self) -> dict[str, set[str]]:  # type: ignore[override]
        """Lightning's subcommands, or only :attr:`only_subcommand` when it is one of them."""
        every = LightningCLI.subcommands()
        return {self.only_subcommand: every[self.only_subcommand]} if self.only_subcommand in every else every

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Parse as LightningCLI does, keeping ``args`` for :meth:`_parse_ckpt_path`."""
        self._args = args
        super().parse_arguments(parser, args)

    def _parse_ckpt_path(self) -> None:
        # The checkpoint's hyper-parameters fill only what the command leaves out (stock LightningCLI lets them
        # override what the user gave); see stcrank.commands.checkpoint_settings.
        merge_checkpoint_hparams(self, self._args)

    def _run_subcommand(self, subcommand: str) -> None:
        # A full disk while writing checkpoints, logs or predictions names the file (a torn checkpoint is removed).
        with writing(None, where=self.trainer.default_root_dir, remove_partial=True):
            super()._run_subcommand(subcommand)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """Link the data module's ``feature_sizes`` into the task, so configs never repeat vocabulary sizes."""
        parser.link_arguments("data.feature_sizes", "model.init_args.feature_sizes", apply_on="instantiate")


def import_components() -> None:
    """Import every task, data module and installed plugin, so that configs can name them by class name.

    jsonargparse resolves a short class name only among subclasses it has seen imported.
    """
    importlib.import_module("stcrank.tasks")
    importlib.import_module("stcrank.data.modules")
    registry.import_all()


def main(argv: list[str] | None) -> StcrankCLI:
    """Run a Lightning command; ``argv`` starts with the command (``fit``...), None reads ``sys.argv``."""
    import_components()
    command = (sys.argv[1:] if argv is None else argv)[:1]
    return StcrankCLI(
        BaseTask,
        BaseDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=argv,
        save_config_kwargs={"overwrite": True},
        only_subcommand=command[0] if command else None,
    )
