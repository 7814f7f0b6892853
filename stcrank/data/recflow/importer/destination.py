"""The store directory of an import: checked, locked, written aside and swapped in only when complete.

An import never writes into ``--dst`` directly. It takes a lock (``.{name}.import-lock`` next to the store: a
second import into the same destination stops at once, and the lock dies with its process, so a killed import
never blocks the next), writes the whole new store into a staging directory next to it
(``.{name}.staging-{pid}``), and only when the store is complete, manifest included, renames the staging
directory into place (the old store, when ``--overwrite true`` replaces one, is first renamed aside to
``.{name}.old-{pid}`` and deleted after the swap). A failed import removes its staging directory; a killed one
leaves it, and the next import into the same destination removes it under the lock. So whatever stops an import
and wherever, ``--dst`` holds either the old store, untouched, or the new one, complete, and a re-run produces
the same store as a clean import.

``--dst`` is refused when it is the release itself or a folder holding it, a file, or a folder that holds
anything but a RecFlow store (or the leftovers of an interrupted import into it); an existing store is replaced
only with ``--overwrite true``.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from stcrank.data.recflow.errors import StoreDestinationError
from stcrank.data.recflow.importer.killpoints import kill_point
from stcrank.data.recflow.schema import DAYS_DIR, MANIFEST, OTHERS_DIR, STORE_FORMAT
from stcrank.io import writing

logger = logging.getLogger(__name__)


def write_json_atomically(path: Path, payload: Mapping[str, Any]) -> None:
    """Write JSON through a temporary file and a rename, so that the file is whole or absent.

    Raises:
        OutputError: If the disk is full or the folder cannot be written (naming ``path``).
    """
    temporary = path.with_name(f".{path.name}.partial-{os.getpid()}")
    with writing(path, "the store manifest"):
        try:
            temporary.write_text(json.dumps(payload, indent=2, sort_keys=False))
            temporary.replace(path)
        finally:
            temporary.unlink(missing_ok=True)


def is_store(folder: Path) -> bool:
    """Whether ``folder`` holds a RecFlow store's manifest (of any version)."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("format") == STORE_FORMAT


def _is_leftover(folder: Path) -> bool:
    """Whether ``folder`` holds only what an interrupted import leaves (partitions, Parquet files, temporaries)."""
    for entry in folder.iterdir():
        if entry.name.startswith(f".{MANIFEST}.partial-"):
            continue
        if entry.name == DAYS_DIR and entry.is_dir():
            for day in entry.iterdir():
                if not day.is_dir() or not all(f.suffix == ".parquet" or f.name.startswith(".") for f in day.iterdir()):
                    return False
            continue
        if entry.name == OTHERS_DIR and entry.is_dir():
            if not all(f.is_file() and (f.suffix == ".parquet" or f.name.startswith(".")) for f in entry.iterdir()):
                return False
            continue
        return False
    return True


def _check_not_the_release(dst: Path, src: Path) -> None:
    if dst == src or dst in src.parents:
        raise StoreDestinationError(
            f"--dst {dst} is the release folder or holds it (--src {src}); choose another --dst for the store"
        )


class StoreDestination:
    """The lock, the staging directory and the final swap of one import (a context manager).

    Args:
        dst: The store directory (``--dst``).
        src: The release directory (``--src``); ``dst`` may be neither it nor a folder holding it.
        overwrite: Whether an existing store may be replaced.
    """

    def __init__(self, dst: Path, src: Path, overwrite: bool) -> None:
        self.dst = Path(dst).resolve()  # a link to a store: the store it points to is replaced
        self.src = Path(src).resolve()
        self.overwrite = overwrite
        self.name = self.dst.name
        self.lock_path = self.dst.parent / f".{self.name}.import-lock"
        self.staging = self.dst.parent / f".{self.name}.staging-{os.getpid()}"
        self._lock_fd: int | None = None

    # -- before ------------------------------------------------------------------------------------------------

    def _check(self) -> None:
        _check_not_the_release(self.dst, self.src)
        if not self.dst.exists():
            return
        if not self.dst.is_dir():
            raise StoreDestinationError(f"--dst {self.dst} is a file; choose a directory for the store")
        if not any(self.dst.iterdir()):
            return
        if is_store(self.dst):
            if not self.overwrite:
                raise StoreDestinationError(
                    f"--dst {self.dst} already holds a RecFlow store; pass --overwrite true to replace it (the new "
                    "store replaces it only once complete)"
                )
            return
        if _is_leftover(self.dst):
            logger.warning("%s: holds the leftovers of an import that did not finish; they are replaced", self.dst)
            return
        others = sorted(p.name for p in self.dst.iterdir())[:5]
        raise StoreDestinationError(
            f"--dst {self.dst} holds files that are not a RecFlow store ({', '.join(others)}...); choose a new or "
            "empty --dst (nothing was deleted)"
        )

    def _lock(self) -> None:
        with writing(self.lock_path, "the import lock"):
            self.dst.parent.mkdir(parents=True, exist_ok=True)
        while True:
            with writing(self.lock_path, "the import lock"):
                fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 32).decode(errors="replace").strip()
                os.close(fd)
                raise StoreDestinationError(
                    f"--dst {self.dst}: another import into it is running (pid {holder or '?'}); wait for it to "
                    "finish or choose another --dst"
                ) from None
            try:  # the file may have been removed by the import that held it: lock the one on disk
                same = os.stat(self.lock_path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                os.ftruncate(fd, 0)
                os.write(fd, str(os.getpid()).encode())
                self._lock_fd = fd
                return
            os.close(fd)

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            self.lock_path.unlink(missing_ok=True)  # while holding it: a waiting import re-checks the inode
            os.close(self._lock_fd)
            self._lock_fd = None

    def _remove_leftovers(self) -> None:
        """Staging and swapped-out directories of earlier imports into this destination (we hold the lock)."""
        for prefix in (f".{self.name}.staging-", f".{self.name}.old-"):
            for leftover in self.dst.parent.glob(f"{prefix}*"):
                if not leftover.name[len(prefix) :].isdigit():  # another destination's (a name ending in a pid only)
                    continue
                if leftover.is_dir() and (is_store(leftover) or _is_leftover(leftover)):
                    logger.info("removing %s, left by an interrupted import", leftover)
                    shutil.rmtree(leftover)

    def __enter__(self) -> StoreDestination:
        self._check()
        self._lock()
        try:
            self._check()  # again under the lock: another import may have finished meanwhile
            self._remove_leftovers()
            with writing(self.staging, "the new store"):
                (self.staging / DAYS_DIR).mkdir(parents=True)
                (self.staging / OTHERS_DIR).mkdir()
        except BaseException:
            self._unlock()
            raise
        return self

    # -- during ------------------------------------------------------------------------------------------------

    @property
    def root(self) -> Path:
        """Where the new store is being written (the staging directory)."""
        return self.staging

    def partition(self, date: str) -> Path:
        """The partition directory of a day in the new store."""
        return self.staging / DAYS_DIR / date

    # -- after -------------------------------------------------------------------------------------------------

    def commit(self, manifest: Mapping[str, Any]) -> None:
        """Write the manifest, then put the new store in place of ``--dst`` (the old one is deleted after)."""
        write_json_atomically(self.staging / MANIFEST, manifest)
        kill_point("manifest")
        old = self.dst.parent / f".{self.name}.old-{os.getpid()}"
        with writing(self.dst, "the store"):
            if self.dst.exists() and any(self.dst.iterdir()):
                self.dst.rename(old)
                kill_point("swap")
            elif self.dst.exists():
                self.dst.rmdir()
            try:
                self.staging.rename(self.dst)
            except OSError:
                if old.exists() and not self.dst.exists():
                    old.rename(self.dst)  # put the old store back
                raise
        if old.exists():
            shutil.rmtree(old)

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        try:
            if self.staging.exists():
                shutil.rmtree(self.staging, ignore_errors=True)
        finally:
            self._unlock()
