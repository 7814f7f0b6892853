"""Usage errors as one line: the option as a user types it, the file it came from, and a likely fix.

jsonargparse reports a rejected command line by printing the whole usage (dozens of lines) and a nested
message whose useful part is its last line. Every ``stcrank`` parser is a :class:`RaisingParserMixin` parser
instead: it raises :class:`~stcrank.errors.UsageError` with the message rewritten by :func:`explain`, which the
command line prints as one line (see :mod:`stcrank.commands.errors`).
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import jsonargparse
import yaml

from stcrank.commands.help_format import PlainHelpParser
from stcrank.errors import UsageError

_NOISE = (
    "Does not validate against any of the Union subtypes",
    "Subtypes:",
    "Errors:",
    "Given value type:",
    "Given value:",
    "Expected a <class 'NoneType'>",
)
"""Lines of jsonargparse's union messages that say nothing to a user (``X | None`` typed options)."""

_CONFIG_OPTIONS = ("-c", "--config")
_PIECE_OPTIONS = ("--trainer", "--model", "--data", "--optimizer", "--lr_scheduler")


def did_you_mean(word: str, choices: Iterable[str], prefix: str = "") -> str:
    """``"; did you mean X?"`` for the closest of ``choices`` to ``word`` (difflib), else ``""``.

    Args:
        word: What the user typed.
        choices: The valid spellings.
        prefix: Put before the suggestion (``"--"``).
    """
    close = difflib.get_close_matches(word, sorted(set(choices)), n=1, cutoff=0.6)
    return f"; did you mean {prefix}{close[0]}?" if close else ""


def _import(path: str) -> Any:
    module, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return None


def _init_options(class_path: str) -> list[str]:
    target = _import(class_path)
    if target is None:
        return []
    try:
        parameters = inspect.signature(target).parameters
    except (TypeError, ValueError):
        return []
    return [name for name, p in parameters.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def _subclass_names(base_paths: Sequence[str]) -> list[str]:
    names: list[str] = []
    for path in base_paths:
        base = _import(path)
        stack = list(base.__subclasses__()) if isinstance(base, type) else []
        while stack:
            cls = stack.pop()
            stack.extend(cls.__subclasses__())
            if not inspect.isabstract(cls):
                names.append(cls.__name__)
    return sorted(set(names))


def _parser_options(parser: Any, subcommand: str | None = None) -> list[str]:
    """The long option names (without ``--``) of ``parser``, or of its sub-command ``subcommand``."""
    if subcommand is not None:
        action = getattr(parser, "_subcommands_action", None)
        parser = getattr(action, "_name_parser_map", {}).get(subcommand, parser)
    names = []
    for action in getattr(parser, "_actions", []):
        names += [option[2:] for option in action.option_strings if option.startswith("--")]
    return [name for name in names if not name.endswith(".help") and name != "help"]


def _suggest_option(typed: str, options: Sequence[str]) -> str:
    """Suggest a fix for the unknown option ``typed`` (``a.b.c``, no dashes) among the parser's ``options``."""
    head, dot, tail = typed.partition(".")
    heads = {option.split(".")[0] for option in options}
    if head not in heads:
        close = difflib.get_close_matches(head, sorted(heads), n=1, cutoff=0.6)
        return f"; did you mean --{close[0]}{dot}{tail}?" if close else ""
    return did_you_mean(typed, [o for o in options if o.startswith(head + ".")], "--")


def _clean(line: str) -> str:
    line = line.strip().removeprefix("- ").strip()
    line = re.sub(r"<class '(?:builtins\.)?([\w.]+)'>", r"\1", line)
    line = re.sub(r"^Expected an? ", "expected ", line)
    return re.sub(r"\. Got value: (.*)$", r", got \1", line)


def explain(message: str, parser: Any = None) -> tuple[str, str | None]:
    """Rewrite a jsonargparse error message as one line naming the option as typed on the command line.

    Args:
        message: The message jsonargparse passed to ``ArgumentParser.error``.
        parser: The parser that rejected the command line (for the names of its options).

    Returns:
        The line, and the unknown key (last component) when the error is an unknown option, else None.
    """
    keys = re.findall(r'Parser key "([^"]+)"', message)
    option = "--" + ".".join(keys) if keys else ""

    unknown = re.search(r"Option '([^']+)' is not accepted", message)
    if unknown:
        key = unknown.group(1)
        typed = f"{option}.{key}" if option else f"--{key}"
        class_paths = re.findall(r"class_path[= ]'([^']+)'", message)
        class_path = class_paths[-1] if class_paths else ""
        name = class_path.rpartition(".")[2]
        if name in ("BaseTask", "BaseDataModule"):
            return f"{typed}: {option} names no class yet; pass -c CONFIG first, or {option} CLASS_NAME", key
        choices = _init_options(class_path)
        hint = did_you_mean(key, choices, f"{option}.")
        if not hint and choices:
            hint = f"; the options of {name} are: {', '.join(choices)}"
        return f"{typed}: {name or 'this class'} has no option {key!r}{hint}", key

    top_level = re.search(r"Subcommand '([^']+)' does not accept option '([^']+)'", message)
    if top_level:
        subcommand, typed = top_level.groups()
        hint = _suggest_option(typed, _parser_options(parser, subcommand))
        return f"unknown option {typed!r} (stcrank {subcommand} has no {typed.split('.')[0]!r}){hint}", typed

    unrecognized = re.match(r"unrecognized arguments: (.*)", message)
    if unrecognized:
        words = unrecognized.group(1).split()
        flag = next((word for word in words if word.startswith("--")), None)
        if flag is None:
            return f"unexpected argument(s): {' '.join(words)}", None
        typed = flag[2:].split("=")[0]
        hint = _suggest_option(typed, _parser_options(parser))
        return f"unknown option --{typed}{hint}", typed.rpartition(".")[2]

    required = re.search(r"the following arguments are required: (.*)", message)
    if required:
        names = [name.strip().lstrip("-") for name in required.group(1).split(",")]
        prefix = f"{option}." if option else "--"
        return "missing required option(s): " + ", ".join(prefix + name for name in names), None

    choice = re.search(r"invalid choice: '([^']+)' \(choose from (.*)\)", message)
    if choice:
        choices = re.findall(r"'([^']+)'", choice.group(2))
        hint = did_you_mean(choice.group(1), choices)
        return f"unknown {choice.group(1)!r}{hint} (choose from {', '.join(choices)})", None

    bad_class = re.search(
        r"Expected a path but (\S+) either not accessible|Expected a dot import path string: (\S+)", message
    )
    if bad_class:
        typed = bad_class.group(1) or bad_class.group(2)
        bases = re.findall(r"<class '([^']+)'>", message)
        names = _subclass_names([base for base in bases if base != "NoneType"])
        hint = did_you_mean(typed, names)
        listing = f" (choose from {', '.join(names)})" if names else ""
        return f"{option} {typed}: no such class{hint}{listing}", None

    lines = []
    for line in message.splitlines():
        line = re.sub(r'Parser key "[^"]+":\s*', "", line.strip().removeprefix("- ").strip())
        line = re.sub(r"^Problem with given class_path '[^']+':\s*", "", line)
        if line and not line.startswith(_NOISE):
            lines.append(_clean(line))
    # In a union's errors, "expected str" (the plugin-name alternative of a plugin option) hides the error that
    # says what is wrong with the value given (a class outside the option's plugin group).
    telling = [line for line in lines if not re.fullmatch(r"expected [\w.]+", line)] or lines
    inner = telling[-1] if telling else " ".join(message.split())
    return (f"{option}: {inner}" if option else inner), None


def config_files(argv: Sequence[str]) -> list[Path]:
    """The YAML files a command line reads: ``-c`` files, piece files given to an option, and the files they name.

    Experiment configs name their pieces by relative path (``model: ../../model/din.yaml``); those are followed.
    """
    found: list[Path] = []
    for index, word in enumerate(argv):
        name, equals, value = word.partition("=")
        if not equals:
            value = argv[index + 1] if index + 1 < len(argv) else ""
        if (name in _CONFIG_OPTIONS or name in _PIECE_OPTIONS) and value.endswith((".yaml", ".yml", ".json")):
            found.append(Path(value))
    queue, seen = list(found), []
    while queue:
        path = queue.pop(0)
        if path in seen or not path.is_file():
            continue
        seen.append(path)
        try:
            content = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(content, dict):
            for value in content.values():
                if isinstance(value, str) and value.endswith((".yaml", ".yml", ".json")):
                    queue.append(path.parent / value)
    return seen


def locate(key: str, argv: Sequence[str]) -> str:
    """Where the unknown option ``key`` was given: ``" (in FILE line N)"``, ``" (on the command line)"`` or ``""``."""
    leaf = key.rpartition(".")[2]
    pattern = re.compile(rf"^\s*{re.escape(leaf)}\s*:")
    for path in config_files(argv):
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if pattern.match(line):
                return f" (in {path} line {number})"
    if any(word.startswith("--") and leaf in word for word in argv):
        return " (on the command line)"
    return ""


class RaisingParserMixin:
    """Make a jsonargparse parser raise :class:`~stcrank.errors.UsageError` instead of printing usage and exiting.

    Parsers built with ``exit_on_error=False`` (jsonargparse's nested parsers) keep raising ``ArgumentError``,
    which the outer parser reports.
    """

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        """Raise :class:`~stcrank.errors.UsageError` with the message of :func:`explain`."""
        if not self.exit_on_error:
            super().error(message, ex)  # raises ArgumentError
        text, key = explain(message, self)
        error = UsageError(text)
        error.key = key
        raise error from ex


class ArgumentParser(RaisingParserMixin, PlainHelpParser, jsonargparse.ArgumentParser):
    """jsonargparse's parser: one-line :class:`~stcrank.errors.UsageError` on a wrong command line, plain-text help."""
