"""The ``stcrank`` command line.

``stcrank fit|validate|test|predict`` run stock :class:`~lightning.pytorch.cli.LightningCLI` in subclass mode
(any :class:`~stcrank.tasks.base.BaseTask` as the model, any :class:`~stcrank.data.base.BaseDataModule` as the
data), so configs are ordinary LightningCLI YAML and compose with ``-c a.yaml -c b.yaml``. The other commands
(``plugins``, ``data``, ``tune``, ``simulate``, ``report``) are jsonargparse commands of their own.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable

from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")

# Extra command name -> "module:function" taking the remaining argv; imported only when used.
EXTRA_COMMANDS: dict[str, tuple[str, str]] = {
    "plugins": ("stcrank.commands.plugins:main", "list installed plugins (--json for machine-readable output)"),
    "data": ("stcrank.commands.data:main", "generate and import datasets (synth-recflow, import-recflow, ...)"),
    "tune": ("stcrank.commands.tune:main", "tune ensemble weights with optuna"),
    "simulate": ("stcrank.commands.simulate:main", "serve ranking policies in the e-shop simulator"),
    "report": ("stcrank.commands.report:main", "run experiment sets and write the paper tables"),
}


class StcrankCLI(LightningCLI):
    """LightningCLI with stcrank's plugins and components imported before parsing.

    Importing them first lets a config name a plugin by its short class name, as jsonargparse resolves only
    subclasses it has seen.
    """

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """Link the data module's ``feature_sizes`` into the task, so configs never repeat vocabulary sizes."""
        parser.link_arguments("data.feature_sizes", "model.init_args.feature_sizes", apply_on="instantiate")


def _import_components() -> None:
    from stcrank import registry

    importlib.import_module("stcrank.tasks")
    importlib.import_module("stcrank.data")
    registry.import_all()


def _resolve(target: str) -> Callable[[list[str]], object]:
    module_name, _, function = target.partition(":")
    return getattr(importlib.import_module(module_name), function)


def _print_overview() -> None:
    print("usage: stcrank COMMAND [options]\n\ncommands:")
    for name in LIGHTNING_COMMANDS:
        print(f"  {name:<10} Lightning: {name} a task (stcrank {name} --help)")
    for name, (_, summary) in EXTRA_COMMANDS.items():
        print(f"  {name:<10} {summary}")


def main(args: list[str] | None = None) -> object:
    """Run the ``stcrank`` command line.

    Args:
        args: The arguments, without the program name; ``sys.argv[1:]`` when None. Tests call this in-process.

    Returns:
        The LightningCLI object for the Lightning commands, else what the command returned.
    """
    argv = list(sys.argv[1:] if args is None else args)
    if not argv or argv[0] in ("-h", "--help"):
        _print_overview()
        return None
    if argv[0] in EXTRA_COMMANDS:
        return _resolve(EXTRA_COMMANDS[argv[0]][0])(argv[1:])
    if argv[0] not in LIGHTNING_COMMANDS:
        _print_overview()
        raise SystemExit(f"stcrank: unknown command {argv[0]!r}")
    from stcrank.data.base import BaseDataModule
    from stcrank.tasks.base import BaseTask

    _import_components()
    return StcrankCLI(
        BaseTask,
        BaseDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=None if args is None else argv,
        save_config_kwargs={"overwrite": True},
    )
