"""``stcrank report``: run an experiment set over several seeds and write the paper's tables.

``stcrank report recflow [options]`` runs the RecFlow paper's tables (:func:`stcrank.reports.recflow.report_recflow`);
``stcrank report stcrank [options]`` runs the STCRank paper's (``stcrank.reports.stcrank:report_stcrank``). Each
report is a keyword-only function whose signature and docstring become its options and ``--help`` text (through
:func:`jsonargparse.CLI`); only the chosen report's module is imported.
"""

from __future__ import annotations

import importlib
import typing
from collections.abc import Callable

from jsonargparse import CLI

from stcrank.commands.help_format import PlainArgumentParser

REPORTS: dict[str, tuple[str, str]] = {
    "recflow": ("stcrank.reports.recflow:report_recflow", "the RecFlow paper's tables (Tables 2-7, 9-14)"),
    "stcrank": ("stcrank.reports.stcrank:report_stcrank", "the STCRank paper's tables"),
}


def _function(name: str) -> Callable[..., object]:
    target = REPORTS[name][0]
    module_name, _, function = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name != module_name:
            raise  # the report exists but one of its own imports is missing: show that error as it is
        raise SystemExit(f"stcrank report {name}: not available: module {module_name} is not installed") from error
    if not hasattr(module, function):
        raise SystemExit(f"stcrank report {name}: not available: {module_name} has no function {function}")
    return getattr(module, function)


def _bare_flags(function: Callable[..., object], argv: list[str]) -> list[str]:
    """Let a boolean option stand alone: ``--quick`` means ``--quick=true`` (jsonargparse wants a value)."""
    flags = {f"--{name}" for name, hint in typing.get_type_hints(function).items() if hint is bool}
    out = []
    for index, arg in enumerate(argv):
        following = argv[index + 1] if index + 1 < len(argv) else None
        bare = following is None or following.startswith("-")
        out.append(f"{arg}=true" if arg in flags and bare else arg)
    return out


def main(argv: list[str]) -> object:
    """Run one ``stcrank report`` sub-command.

    Args:
        argv: The arguments after ``report``: the report's name, then its options.

    Returns:
        What the report returned (a summary dict), or None after printing the usage.
    """
    if not argv or argv[0] not in REPORTS:
        names = ", ".join(REPORTS)
        if argv and argv[0] not in ("-h", "--help"):
            raise SystemExit(f"stcrank report: unknown report {argv[0]!r}; choose one of: {names}")
        print(f"usage: stcrank report {{{names}}} [options]\n")
        for name, (_, summary) in REPORTS.items():
            print(f"  {name:<10} {summary}")
        return None
    name = argv[0]
    function = _function(name)
    return CLI(
        {name: function}, args=_bare_flags(function, argv), prog="stcrank report", parser_class=PlainArgumentParser
    )
