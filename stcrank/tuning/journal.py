"""Journal-file storage of tuning studies that survives a full disk.

optuna's :class:`~optuna.storages.journal.JournalFileBackend` appends one JSON line per operation. A write that
fails half-way (a full disk, a killed process) leaves a torn last line; optuna then masks the disk error
(``AssertionError: Should not reach.``), and the next process that appends after the torn line makes the journal
unreadable (a ``JSONDecodeError`` naming no file). Here:

* every append is all-or-nothing: under the journal's lock, a failed append is cut off again;
* opening a journal whose last line is torn (a process killed mid-write) cuts that line off, with a warning:
  it is a record no process ever read, since optuna ignores a line without its newline;
* :func:`storage_errors` turns a disk problem into an :class:`~stcrank.io.OutputError` naming the journal, and
  a damaged line inside the journal into a :class:`JournalError` naming the file and the line.

A re-run of the same command after freeing space resumes the study from its finished trials.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

from stcrank.errors import StcrankError
from stcrank.io import output_error

logger = logging.getLogger(__name__)

RESUME_HINT = "free space (or give another --storage), then run the same command again: the study resumes"


class JournalError(StcrankError, ValueError):
    """A tuning journal holds a line that is not a complete record."""


class AtomicJournalFileBackend(JournalFileBackend):
    """A :class:`~optuna.storages.journal.JournalFileBackend` whose appends are all-or-nothing.

    Args:
        file_path: The journal file.
        lock: The lock every process sharing the journal takes to append.
    """

    def __init__(self, file_path: str, lock: JournalFileOpenLock) -> None:
        super().__init__(file_path, lock_obj=lock)
        self.file_path = file_path
        self.lock = lock

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        """Append the records as JSON lines; if writing fails, cut the file back to where it was and re-raise."""
        data = ("\n".join(json.dumps(log, separators=(",", ":")) for log in logs) + "\n").encode("utf-8")
        self.lock.acquire()
        try:
            size = os.path.getsize(self.file_path)
            try:
                with open(self.file_path, "ab") as file:
                    file.write(data)
                    file.flush()
                    os.fsync(file.fileno())
            except BaseException:
                os.truncate(self.file_path, size)  # cutting a file back needs no space
                raise
        finally:
            self.lock.release()


def repair_torn_tail(path: str | os.PathLike[str], lock: JournalFileOpenLock) -> int:
    """Cut off a last line without its newline (a write that never completed), under the journal's lock.

    Returns:
        The number of bytes removed (0 when the journal ends with a complete record).
    """
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        return 0
    lock.acquire()
    try:
        with open(path, "rb") as file:
            size = file.seek(0, os.SEEK_END)
            end, block = size, 1 << 16
            keep = 0
            while end > 0:  # find the last newline, reading backwards
                start = max(0, end - block)
                file.seek(start)
                chunk = file.read(end - start)
                if end == size and chunk.endswith(b"\n"):
                    return 0
                newline = chunk.rfind(b"\n")
                if newline >= 0:
                    keep = start + newline + 1
                    break
                end = start
        os.truncate(path, keep)
    finally:
        lock.release()
    logger.warning(
        "the tuning journal %s ended in an incomplete record (%d bytes, from a write that never completed); it was "
        "removed and the study goes on from the complete records",
        path,
        size - keep,
    )
    return size - keep


def open_journal(path: str | os.PathLike[str]) -> JournalStorage:
    """Open (creating it and its folders if missing) a journal file as an optuna storage, repaired if torn.

    Locking uses :class:`~optuna.storages.journal.JournalFileOpenLock` (an ``O_EXCL`` lock file, which works for
    processes on one machine and on NFSv3+, and needs no symlink rights), so several processes can share one
    study; a lock left behind by a killed process is broken after optuna's 30 s grace period.
    """
    path = Path(path)
    with storage_errors(str(path)):
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = JournalFileOpenLock(str(path))
        repair_torn_tail(path, lock)
        return JournalStorage(AtomicJournalFileBackend(str(path), lock))


def damaged_line(path: str | os.PathLike[str]) -> int | None:
    """The number (from 1) of the first line of a journal that is not a complete JSON record, or None."""
    with open(path, "rb") as file:
        for number, line in enumerate(file, start=1):
            try:
                json.loads(line)
            except ValueError:
                return number
            if not line.endswith(b"\n"):
                return number
    return None


@contextmanager
def storage_errors(storage: str | None) -> Iterator[None]:
    """Name the storage in a disk problem, and the line in a damaged journal, raised by the body.

    Args:
        storage: A journal file path, an RDB URL, or None (memory).

    Raises:
        OutputError: The storage cannot take the study's writes (a full disk...).
        JournalError: The journal holds a line that is not a complete record.
    """
    try:
        yield
    except StcrankError:
        raise
    except BaseException as error:
        what = "the tuning journal" if storage and "://" not in storage else "the tuning storage"
        converted = output_error(error, storage, what, RESUME_HINT) if storage else None
        if converted is not None:
            raise converted from error
        if storage and "://" not in storage and isinstance(error, ValueError) and Path(storage).is_file():
            line = damaged_line(storage)
            if line is not None:
                raise JournalError(
                    f"the tuning journal {storage} is damaged at line {line} (not a complete record, e.g. from a "
                    "full disk under an older stcrank); move it aside to start the study afresh, or keep the "
                    f"records before it: head -n {line - 1} {storage} > repaired.log, then use --storage "
                    "repaired.log"
                ) from error
        raise
