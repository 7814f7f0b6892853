"""Plain-text ``--help``: the docstrings behind the options are written for Sphinx, the terminal gets them clean.

Every command's options and help come from Google-style docstrings (through jsonargparse), and the same docstrings
build the API reference, where inline literals, cross-reference roles and links render as such. In a terminal that
markup is noise, so :class:`PlainHelpFormatter` strips it from every option's help, section title and description:
an inline literal keeps its text without the double backticks, a cross-reference role keeps its target (the last
name only when the target starts with a tilde, the title when it has one), a link becomes "title (address)",
emphasis loses its asterisks and a literal-block marker ``::`` becomes a colon.
"""

from __future__ import annotations

import re
from typing import Any

from jsonargparse import ArgumentParser, DefaultHelpFormatter

# :role:`text`, :domain:role:`text`; the text may be "title <target>", "~dotted.path" or "!path".
_ROLE = re.compile(r":(?:[A-Za-z][\w.+-]*:)?[A-Za-z][\w.+-]*:`(?P<body>[^`]+)`")
# `title <https://...>`_ and anonymous `title <...>`__.
_LINK = re.compile(r"`(?P<title>[^`<]+?)\s*<(?P<target>[^`>]+)>`__?")
_LITERAL = re.compile(r"``(?P<body>.+?)``")
# `interpreted text` and `reference`_ (a single backtick pair that is not part of a literal).
_INTERPRETED = re.compile(r"(?<!`)`(?P<body>[^`]+)`_{0,2}(?!`)")
_STRONG = re.compile(r"(?<![\w*])\*\*(?P<body>[^\s*](?:[^*]*[^\s*])?)\*\*(?![\w*])")
_EMPHASIS = re.compile(r"(?<![\w*])\*(?P<body>[^\s*](?:[^*]*[^\s*])?)\*(?![\w*])")
_LITERAL_BLOCK = re.compile(r"(?<=\S)::(?=\s*$)", re.MULTILINE)
_LONE_LITERAL_BLOCK = re.compile(r"(?:^|(?<=\s))::(?=\s*$)", re.MULTILINE)


def _role_text(match: re.Match[str]) -> str:
    body = match.group("body").strip()
    titled = re.fullmatch(r"(?P<title>.+?)\s*<(?P<target>[^<>]+)>", body)
    if titled:
        return titled.group("title")
    body = body.lstrip("!")
    if body.startswith("~"):
        return body[1:].rsplit(".", 1)[-1]
    return body


def plain_text(text: str) -> str:
    """Strip reStructuredText inline markup from ``text`` so that it reads cleanly in a terminal.

    Args:
        text: A docstring fragment: an option's help, a section title or a command's description.

    Returns:
        The text with literals, roles, links and emphasis reduced to their words; anything else is kept as is.
    """
    if not text or not any(mark in text for mark in "`*:"):
        return text
    literals: list[str] = []

    def keep(match: re.Match[str]) -> str:  # literals first, so that their content is never touched
        literals.append(match.group("body"))
        return f"\0{len(literals) - 1}\0"

    text = _LITERAL.sub(keep, text)
    text = _ROLE.sub(_role_text, text)
    text = _LINK.sub(lambda m: f"{m.group('title')} ({m.group('target')})", text)
    text = _INTERPRETED.sub(lambda m: m.group("body"), text)
    text = _STRONG.sub(lambda m: m.group("body"), text)
    text = _EMPHASIS.sub(lambda m: m.group("body"), text)
    text = _LONE_LITERAL_BLOCK.sub("", text)
    text = _LITERAL_BLOCK.sub(":", text)
    return re.sub("\0(\\d+)\0", lambda m: literals[int(m.group(1))], text)


class PlainHelpFormatter(DefaultHelpFormatter):
    """jsonargparse's help formatter (types, defaults) with reStructuredText markup stripped by :func:`plain_text`.

    Parsers built from :class:`PlainHelpParser` use it; sub-command parsers inherit it.
    """

    def _expand_help(self, action: object) -> str:
        return plain_text(super()._expand_help(action))

    def _format_text(self, text: str) -> str:
        return super()._format_text(plain_text(text))

    def start_section(self, heading: str | None) -> None:
        """Open a help section (an argument group) with its title in plain text."""
        super().start_section(plain_text(heading) if heading else heading)


class PlainHelpParser:
    """Mixin for a jsonargparse parser class: :class:`PlainHelpFormatter` unless another ``formatter_class`` is given.

    A parser class rather than a ``formatter_class`` argument, because jsonargparse builds the parser of a
    ``--model.help CLASS`` request from the parser's class alone.
    """

    def __init__(self, *args: Any, formatter_class: type = PlainHelpFormatter, **kwargs: Any) -> None:
        super().__init__(*args, formatter_class=formatter_class, **kwargs)


class PlainArgumentParser(PlainHelpParser, ArgumentParser):
    """jsonargparse's ``ArgumentParser`` with plain-text help: give it as ``parser_class`` to ``jsonargparse.CLI``."""
