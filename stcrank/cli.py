"""The ``stcrank`` command line.

``stcrank fit|validate|test|predict`` run stock :class:`~lightning.pytorch.cli.LightningCLI` in subclass mode
(any :class:`~stcrank.tasks.base.BaseTask` as the model, any :class:`~stcrank.data.base.BaseDataModule` as the
data), so configs are ordinary LightningCLI YAML and compose with ``-c a.yaml -c b.yaml``. The other commands
(``plugins``, ``data``, ``tune``, ``simulate``, ``report``, ``export``) are commands of their own. Each command's
module is imported only when it runs, so ``stcrank plugins`` does not pay for importing Lightning.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable

from stcrank.errors import UsageError

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")

# Command name -> ("module:function" taking the remaining argv, summary).
EXTRA_COMMANDS: dict[str, tuple[str, str]] = {
    "plugins": ("stcrank.commands.plugins:main", "list installed plugins (--json for machine-readable output)"),
    "data": ("stcrank.commands.data:main", "generate and import datasets (synth-recflow, import-recflow, ...)"),
    "tune": ("stcrank.commands.tune:main", "tune ensemble weights with optuna"),
    "simulate": ("stcrank.commands.simulate:main", "serve ranking policies in the e-shop simulator"),
    "report": ("stcrank.commands.report:main", "run experiment sets and write the paper tables"),
    "export": ("stcrank.commands.export:main", "export models, re-rankers and the pipeline to ONNX/torch.export"),
}


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
        from stcrank.commands.usage import did_you_mean

        commands = [*LIGHTNING_COMMANDS, *EXTRA_COMMANDS]
        hint = did_you_mean(argv[0], commands)
        raise UsageError(f"unknown command {argv[0]!r}{hint} (commands: {', '.join(commands)}; see stcrank --help)")
    from stcrank.commands.lightning import main as lightning_main

    try:
        return lightning_main(argv)
    except UsageError as error:
        key = getattr(error, "key", None)
        if key:
            from stcrank.commands.usage import locate

            error.args = (f"{error}{locate(key, argv)}",)
        raise


def _command_name(argv: list[str]) -> str:
    if argv and argv[0] in ("data", "report") and len(argv) > 1 and not argv[1].startswith("-"):
        return " ".join(argv[:2])
    return argv[0] if argv and (argv[0] in LIGHTNING_COMMANDS or argv[0] in EXTRA_COMMANDS) else ""


def console_main(args: list[str] | None = None) -> None:
    """Entry point of the ``stcrank`` console script: run :func:`main` and report an error a user can fix.

    An expected error (:class:`~stcrank.errors.StcrankError`, a rejected command line, an ``OSError``) is printed
    as one line ``stcrank COMMAND: error: MESSAGE`` and the process exits with its status (2 for a wrong option
    or setting, 1 otherwise); anything else keeps its traceback. ``--debug`` (anywhere on the command line) or
    ``STCRANK_DEBUG=1`` shows the traceback of every error.

    Unless ``OMP_WAIT_POLICY`` is set, it is set to ``PASSIVE`` first (torch is not loaded yet): OpenMP threads
    that wait then sleep instead of spinning, so multi-threaded kernels keep their speed when other processes
    share the cores (see the scaling guide).

    Args:
        args: The arguments, without the program name; ``sys.argv[1:]`` when None.
    """
    from stcrank.commands.errors import debug_requested, report

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    argv = list(sys.argv[1:] if args is None else args)
    debug = debug_requested(argv)
    try:
        main(argv)
    except KeyboardInterrupt:
        if debug:
            raise
        print("stcrank: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    except Exception as error:
        if debug:
            raise
        status = report(error, _command_name(argv))
        if status is None:
            raise  # a bug in stcrank: keep the traceback
        raise SystemExit(status) from None
