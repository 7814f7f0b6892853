"""``stcrank data``: generate synthetic datasets, import real ones, and verify a store.

Each sub-command is a plain function whose signature and Google-style docstring become its options and
``--help`` text (through :func:`jsonargparse.CLI`). Only the chosen sub-command's module is imported; the list of
sub-commands reads their summaries from the source, importing none of them (the e-shop generator would import
torch and the simulator).
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import json
from collections.abc import Callable
from pathlib import Path

from jsonargparse import CLI

from stcrank.commands.usage import ArgumentParser, did_you_mean
from stcrank.errors import UsageError

SUBCOMMANDS: dict[str, str] = {
    "synth-recflow": "stcrank.data.recflow.synth:synth_recflow",
    "import-recflow": "stcrank.data.recflow.importer.command:import_recflow",
    "verify": "stcrank.data.recflow.integrity:verify_store",
    "synth-eshop": "stcrank.data.eshop.synth:synth_eshop",
}


def _function(target: str) -> Callable[..., object]:
    module_name, _, name = target.partition(":")
    return getattr(importlib.import_module(module_name), name)


def _summary(target: str) -> str:
    """The first line of a sub-command's docstring, read from its module's source without importing it."""
    module_name, _, name = target.partition(":")
    spec = importlib.util.find_spec(module_name)
    if spec is None or spec.origin is None:
        raise ImportError(f"no module named {module_name!r}")
    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == name:
            return ((ast.get_docstring(node) or "").strip().splitlines() or [""])[0]
    raise ImportError(f"{module_name} has no function {name!r}")


def main(argv: list[str]) -> object:
    """Run one ``stcrank data`` sub-command."""
    if not argv or argv[0] not in SUBCOMMANDS:
        names = ", ".join(SUBCOMMANDS)
        if argv and argv[0] not in ("-h", "--help"):
            hint = did_you_mean(argv[0], SUBCOMMANDS)
            raise UsageError(f"unknown sub-command {argv[0]!r}{hint} (choose one of: {names})")
        print(f"usage: stcrank data {{{names}}} [options]\n")
        for name, target in SUBCOMMANDS.items():
            try:
                summary = _summary(target)
            except (ImportError, OSError, SyntaxError) as error:  # one broken sub-command must not hide the others
                summary = f"(unavailable: {error})"
            print(f"  {name:<16} {summary}")
        return None
    name = argv[0]
    result = CLI({name: _function(SUBCOMMANDS[name])}, args=argv, prog="stcrank data", parser_class=ArgumentParser)
    if isinstance(result, dict):
        print(json.dumps(result.get("totals", result), indent=2, default=str))
    return result
