"""The ``stcrank-options`` directive: a command's options as a table, read from the parser the command builds.

The table comes from the same jsonargparse parser that prints ``--help`` (so it never drifts from the code), with
each option's help written as reStructuredText, the way the docstrings are. Use it inside an ``eval-rst`` block::

    .. stcrank-options:: stcrank.commands.simulate:simulate

    .. stcrank-options:: stcrank.tasks:RankingTask
       :prefix: model

A function is built as ``jsonargparse.CLI`` builds it, a class as LightningCLI builds a ``--model``/``--data``
class (``:prefix:`` names the key), and ``stcrank.commands.plugins:main`` by running it on ``--help``.
"""

from __future__ import annotations

import importlib
import inspect
import typing
from argparse import SUPPRESS, Action
from pathlib import Path

from docutils import nodes
from docutils.parsers.rst import directives
from docutils.statemachine import StringList
from jsonargparse import ActionConfigFile, ArgumentParser, capture_parser
from sphinx.util.docutils import SphinxDirective

from stcrank.commands.help_format import PlainArgumentParser, PlainHelpFormatter

_SKIPPED = ("help", "config", "print_config")
_ROOT = Path(__file__).resolve().parents[1]


def _target(path: str) -> object:
    module_name, _, name = path.partition(":")
    return getattr(importlib.import_module(module_name), name)


def build_parser(path: str, prefix: str | None = None) -> ArgumentParser:
    """The parser behind a command function, a ``main(argv)`` that builds its own, or a class of a config key."""
    target = _target(path)
    if inspect.isclass(target):
        parser = PlainArgumentParser()
        parser.add_class_arguments(target, prefix, fail_untyped=False, sub_configs=True)
        return parser
    if "argv" in inspect.signature(target).parameters:
        return capture_parser(lambda: target([]))
    from jsonargparse import CLI

    return capture_parser(lambda: CLI(target, args=[], parser_class=PlainArgumentParser))


def _literal(text: str) -> str:
    return f"``{text}``" if text else ""


def _type_cell(action: Action, formatter: PlainHelpFormatter) -> str:
    choices = getattr(action, "choices", None)
    hint = getattr(action, "_typehint", None)
    if typing.get_origin(hint) is typing.Literal:
        choices = typing.get_args(hint)
    if choices:
        return " | ".join(_literal(str(choice)) for choice in choices)
    if action.nargs == 0:
        return "flag"
    type_str = formatter._get_type_str(action)
    return _literal(type_str.replace("NoneType", "null")) if type_str else ""


def _default_cell(action: Action) -> str:
    if action.required:
        return "required"
    if action.default in (None, SUPPRESS) or action.nargs == 0:
        return ""
    default = action.default
    if isinstance(default, dict | list | tuple) and not default:
        return ""
    if isinstance(default, str) and default.startswith(f"{_ROOT}/"):
        default = default[len(str(_ROOT)) + 1 :]  # a file shipped in the repository, not this machine's path
    return _literal(str(getattr(default, "as_dict", lambda: default)()))


def option_rows(parser: ArgumentParser) -> list[tuple[str, str, str, str]]:
    """``(option, type, default, description)`` per option a user sets; help, config and linked options left out."""
    formatter = PlainHelpFormatter(parser.prog)
    rows = []
    for action in parser._actions:
        if action.dest in _SKIPPED or isinstance(action, ActionConfigFile) or action.help == SUPPRESS:
            continue
        kind = type(action).__name__
        if kind in ("ActionLink", "_ActionHelpClassPath", "_ActionConfigLoad"):
            continue
        if not action.option_strings:  # a positional argument: shown by its name, in capitals as in --help
            description = " ".join((action.help or "").split())
            rows.append((_literal(str(action.dest).upper()), _type_cell(action, formatter), "required", description))
            continue
        option = min((o for o in action.option_strings if o.startswith("--")), key=len, default="")
        if not option or option.endswith("+") or option.endswith(".help"):
            continue
        description = " ".join((action.help or "").split())
        rows.append((_literal(option), _type_cell(action, formatter), _default_cell(action), description))
    return rows


def _list_table(rows: list[tuple[str, str, str, str]]) -> list[str]:
    # Three columns: the option with its type below it, the default, the description (the widest).
    lines = [
        ".. list-table::",
        "   :header-rows: 1",
        "   :widths: 30 12 58",
        "   :class: stcrank-options",
        "",
        "   * - option",
        "     - default",
        "     - description",
    ]
    for option, type_cell, default, description in rows:
        lines.append(f"   * - {option}")
        if type_cell:
            lines += ["", f"       {type_cell}"]
        lines.append(f"     - {default}" if default else "     -")
        lines.append(f"     - {description}" if description else "     -")
    return lines


class StcrankOptions(SphinxDirective):
    """Insert the options table of a command (``module:function``) or of a config class (``module:Class``)."""

    required_arguments = 1
    option_spec: typing.ClassVar[dict] = {"prefix": directives.unchanged}

    def run(self) -> list[nodes.Node]:
        """Build the parser, record the sources as dependencies, and parse the table it yields."""
        path = self.arguments[0]
        module = importlib.import_module(path.partition(":")[0])
        for source in (getattr(module, "__file__", None), __file__):  # rebuild when either changes
            if source:
                self.env.note_dependency(source)
        rows = option_rows(build_parser(path, self.options.get("prefix")))
        container = nodes.container()
        self.state.nested_parse(StringList(_list_table(rows), source=f"<stcrank-options {path}>"), 0, container)
        return container.children


def setup(app: object) -> dict[str, bool]:
    """Register the directive."""
    app.add_directive("stcrank-options", StcrankOptions)
    return {"parallel_read_safe": True}
