"""Writing files: a full disk or a refused write becomes one error naming the file and what to do.

Python reports a full disk as ``OSError: [Errno 28] No space left on device`` without the file's name (a
buffered write fails on flush, pyarrow and matplotlib fail deep inside), and libraries in between may mask it
(optuna then fails with ``AssertionError: Should not reach.``). The helpers here find such an error anywhere in an
exception's chain and raise an :class:`OutputError` naming the file instead:

* :func:`writing` wraps any code that writes a known path (or, with ``path=None``, names the file the error
  carries);
* :func:`atomic_path` writes a whole file under a temporary name and renames it into place, so a failed write
  never leaves a truncated file behind;
* :func:`output_error` converts a caught exception, for code that handles errors itself.

Example::

    with atomic_path(folder / "table.md", "the results table") as temporary:
        temporary.write_text(table)
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from stcrank.errors import StcrankError

FULL = "no space left on the device"
QUOTA = "the disk quota is exceeded"
DISK_ERRNOS: dict[int, str] = {
    errno.ENOSPC: FULL,
    errno.EDQUOT: QUOTA,
    errno.EFBIG: "the file is too large for the file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "the operation is not permitted",
    errno.EROFS: "the file system is read-only",
}
"""``errno`` values that mean "this location cannot take the file", with how the message words them."""

_DISK_MESSAGES: dict[str, str] = {
    "no space left on device": FULL,
    "database or disk is full": FULL,  # SQLite (an RDB tuning storage)
    "disk quota exceeded": QUOTA,
}
"""Messages of errors that carry no ``errno`` but mean the same."""

SPACE_HINT = "free space (or choose another location) and run the command again"
ACCESS_HINT = "choose a location you can write to (or change its permissions) and run the command again"


class OutputError(StcrankError, OSError):
    """A file could not be written: the disk is full, a quota is reached, or writing there is not allowed."""


def _chain(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def disk_problem(error: BaseException) -> tuple[BaseException, str] | None:
    """Find, in ``error`` or the errors it was raised from, one that means the location cannot take the file.

    Returns:
        ``(that error, the reason in words)``, or None when the chain holds no such error.
    """
    for cause in _chain(error):
        if isinstance(cause, OSError) and cause.errno in DISK_ERRNOS:
            return cause, DISK_ERRNOS[cause.errno]
        text = str(cause).lower()
        for pattern, reason in _DISK_MESSAGES.items():
            if pattern in text:
                return cause, reason
    return None


def output_error(
    error: BaseException,
    path: str | os.PathLike[str] | None = None,
    what: str = "",
    hint: str | None = None,
    where: str | os.PathLike[str] | None = None,
) -> OutputError | None:
    """The :class:`OutputError` ``error`` stands for, or None if it is not a disk problem.

    Args:
        error: The caught exception.
        path: The file being written; when None, the file the error names (the destination of a failed copy or
            move, else its file name).
        what: What the file is, for the message (``"the tuning journal"``).
        hint: What to do, for the message; by default, free space or choose a location one can write to.
        where: The folder to name when neither ``path`` nor the error names a file.
    """
    if isinstance(error, StcrankError):
        return None
    found = disk_problem(error)
    if found is None:
        return None
    cause, reason = found
    if path is None:
        path = getattr(cause, "filename2", None) or getattr(cause, "filename", None)
    if path is None and where is not None:
        what, path = what or "under", where
    named = f"{what} {path}" if what and path else str(path or what or "a file")
    if hint is None:
        hint = SPACE_HINT if reason in (FULL, QUOTA, DISK_ERRNOS[errno.EFBIG]) else ACCESS_HINT
    return OutputError(f"cannot write {named}: {reason}; {hint}")


@contextmanager
def writing(
    path: str | os.PathLike[str] | None,
    what: str = "",
    hint: str | None = None,
    *,
    where: str | os.PathLike[str] | None = None,
    remove_partial: bool = False,
) -> Iterator[None]:
    """Raise an :class:`OutputError` naming ``path`` if the body fails for a disk problem (see :func:`output_error`).

    Args:
        path: The file being written, or None to name the one the error carries.
        what: What the file is, for the message.
        hint: What to do, for the message.
        where: The folder to name when neither ``path`` nor the error names a file.
        remove_partial: Delete what was written of ``path``, or with ``path=None`` of the destination of the
            failed copy or move the error names: a whole-file write that failed half-way.
    """
    try:
        yield
    except BaseException as error:
        converted = output_error(error, path, what, hint, where)
        if converted is None:
            raise
        if remove_partial:
            cause = disk_problem(error)[0]  # type: ignore[index]
            partial = path if path is not None else getattr(cause, "filename2", None)
            if partial is not None and Path(partial).is_file():
                Path(partial).unlink()
        raise converted from error


@contextmanager
def atomic_path(path: str | os.PathLike[str], what: str = "", hint: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffix); when the body returns, rename it to ``path``.

    A failure leaves ``path`` as it was (absent, or its previous content) and removes the temporary file; a disk
    problem becomes an :class:`OutputError` naming ``path``. Parent folders are created.

    Args:
        path: The file to write.
        what: What the file is, for the message.
        hint: What to do, for the message.
    """
    path = Path(path)
    with writing(path, what, hint):
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
        os.close(handle)
        temporary = Path(name)
        try:
            yield temporary
            os.replace(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)
