"""How the ``stcrank`` command line reports an error a user can fix: one line, no traceback, a non-zero exit.

Expected errors are stcrank's own (:class:`~stcrank.errors.StcrankError`), a rejected command line
(``argparse.ArgumentError``) and the operating system's (``OSError``: a missing file, a full disk, a denied
permission). They are often wrapped: jsonargparse re-raises an error of a class being built as a ``ValueError``
whose cause is the original, so the whole chain of causes is searched. Anything else is a bug and keeps its
traceback. ``--debug`` or ``STCRANK_DEBUG=1`` shows the traceback of every error.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator

from stcrank.errors import StcrankError

DEBUG_FLAG = "--debug"
DEBUG_VARIABLE = "STCRANK_DEBUG"


def debug_requested(argv: list[str]) -> bool:
    """Whether the traceback is wanted: ``--debug`` in ``argv`` (removed from it) or ``STCRANK_DEBUG`` set."""
    flagged = DEBUG_FLAG in argv
    while DEBUG_FLAG in argv:
        argv.remove(DEBUG_FLAG)
    return flagged or os.environ.get(DEBUG_VARIABLE, "").lower() in ("1", "true", "yes", "on")


def _chain(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def user_error(error: BaseException) -> BaseException | None:
    """The error a user can fix behind ``error`` (itself or one of its causes), or None for a bug."""
    chain = list(_chain(error))
    for kind in (StcrankError, argparse.ArgumentError, OSError):
        found = next((link for link in chain if isinstance(link, kind)), None)
        if found is not None:
            return found
    return None


def one_line(error: BaseException) -> str:
    """The message of a user error on one line."""
    if isinstance(error, argparse.ArgumentError):
        from stcrank.commands.usage import explain

        text = explain(str(error))[0]
    elif isinstance(error, OSError) and error.filename is not None and error.strerror:
        text = f"{error.filename}: {error.strerror}"
    else:
        text = str(error) or type(error).__name__
    return " ".join(text.split())


def exit_code(error: BaseException) -> int:
    """2 for a wrong command line or setting, 1 for anything else."""
    if isinstance(error, StcrankError):
        return error.exit_code
    return 2 if isinstance(error, argparse.ArgumentError) else 1


def report(error: BaseException, command: str) -> int | None:
    """Print a user error as ``stcrank COMMAND: error: MESSAGE`` on stderr.

    Args:
        error: What escaped the command.
        command: The command's name (``fit``, ``data import-recflow``...), empty for the overview.

    Returns:
        The exit status, or None when ``error`` is a bug (nothing printed: the caller re-raises it).
    """
    found = user_error(error)
    if found is None:
        return None
    prog = f"stcrank {command}".strip()
    print(f"{prog}: error: {one_line(found)}", file=sys.stderr, flush=True)
    return exit_code(found)
