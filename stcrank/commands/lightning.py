"""``stcrank fit|validate|test|predict``: stock LightningCLI over stcrank's tasks and data modules."""

from __future__ import annotations

import importlib

from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from stcrank import registry
from stcrank.commands.help_format import PlainHelpParser
from stcrank.data.base import BaseDataModule
from stcrank.tasks.base import BaseTask


class StcrankArgumentParser(PlainHelpParser, LightningArgumentParser):
    """Lightning's argument parser with docstrings shown as plain text in ``--help``."""


class StcrankCLI(LightningCLI):
    """LightningCLI in subclass mode for the task (model) and the data module.

    Any :class:`~stcrank.tasks.base.BaseTask` is a valid ``model`` and any
    :class:`~stcrank.data.base.BaseDataModule` a valid ``data``; the data module's ``feature_sizes`` are linked
    into the task when both are built.
    """

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
    return StcrankCLI(
        BaseTask,
        BaseDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=argv,
        save_config_kwargs={"overwrite": True},
        parser_class=StcrankArgumentParser,
    )
