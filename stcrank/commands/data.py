"""``stcrank data``: generate synthetic datasets and import real ones.

Each sub-command is a plain function whose signature and Google-style docstring become its options and
``--help`` text (through :func:`jsonargparse.CLI`). Only the chosen sub-command's module is imported.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable

from jsonargparse import CLI

from stcrank.commands.help_format import PlainArgumentParser

SUBCOMMANDS: dict[str, str] = {
    "synth-recflow": "stcrank.data.recflow.synth:synth_recflow",
    "import-recflow": "stcrank.data.recflow.importer:import_recflow",
    "synth-eshop": "stcrank.data.eshop.synth:synth_eshop",
}


def _function(target: str) -> Callable[..., object]:
    module_name, _, name = target.partition(":")
    return getattr(importlib.import_module(module_name), name)


def main(argv: list[str]) -> object:
    """Run one ``stcrank data`` sub-command."""
    if not argv or argv[0] not in SUBCOMMANDS:
        names = ", ".join(SUBCOMMANDS)
        if argv and argv[0] not in ("-h", "--help"):
            raise SystemExit(f"stcrank data: unknown sub-command {argv[0]!r}; choose one of: {names}")
        print(f"usage: stcrank data {{{names}}} [options]\n")
        for name, target in SUBCOMMANDS.items():
            try:
                doc = (_function(target).__doc__ or "").strip().splitlines()
            except ImportError as error:  # one broken sub-command must not hide the others
                doc = [f"(unavailable: {error})"]
            print(f"  {name:<16} {doc[0] if doc else ''}")
        return None
    name = argv[0]
    result = CLI({name: _function(SUBCOMMANDS[name])}, args=argv, prog="stcrank data", parser_class=PlainArgumentParser)
    if isinstance(result, dict):
        print(json.dumps(result.get("totals", result), indent=2, default=str))
    return result
