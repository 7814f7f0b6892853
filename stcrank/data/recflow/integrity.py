"""What a store's manifest records of each file, the cheap check of every load, and ``stcrank data verify``.

The importer records in ``manifest.json`` (``files``), for every Parquet file of the store, its row count, its
size in bytes and the SHA-256 of its content. Two levels of checks use them:

* **Every load** (:class:`~stcrank.data.recflow.store.RecFlowStore`) compares a file's size and the row count in its
  Parquet footer with the manifest before reading it, and reads with Parquet's page checksums verified (the
  importer writes a CRC32 per data page). A partition cut to its first rows, one copied from another store, or a
  flipped bit in a data page is refused naming the file, instead of giving a wrong metric.
* **On demand**, ``stcrank data verify STORE`` (:func:`verify_store`) recomputes every file's SHA-256 and compares
  all three, naming every file that differs and how.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from stcrank.data.recflow.errors import RecFlowFormatError

HASH_BLOCK = 1 << 22
"""Bytes hashed at a time (4 MiB)."""


def sha256_of(path: Path) -> str:
    """The SHA-256 of a file's content, hex."""
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while block := file.read(HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def parquet_rows(path: Path) -> int:
    """Rows of a Parquet file, from its footer (RecFlowFormatError if it cannot be read)."""
    try:
        return pq.ParquetFile(path).metadata.num_rows
    except (pa.ArrowInvalid, OSError) as error:
        raise RecFlowFormatError(f"{path}: not a readable Parquet file ({error}); the store is damaged") from error


def describe_file(path: Path) -> dict[str, Any]:
    """The manifest entry of a store file: rows, bytes and SHA-256."""
    return {"rows": parquet_rows(path), "bytes": path.stat().st_size, "sha256": sha256_of(path)}


def describe_files(root: Path, folder: Path) -> dict[str, dict[str, Any]]:
    """Manifest entries of the Parquet files of ``folder``, keyed by their path relative to the store ``root``."""
    return {
        path.relative_to(root).as_posix(): describe_file(path)
        for path in sorted(folder.glob("*.parquet"))
        if path.is_file()
    }


def check_file(root: Path, relative: str, entry: dict[str, Any] | None) -> pq.ParquetFile:
    """Open a store file after the cheap check against its manifest entry (size, then footer row count).

    Args:
        root: The store directory.
        relative: The file's path relative to the store (as in the manifest).
        entry: Its manifest entry; None when the manifest does not list it (a store that lost track of a file).

    Returns:
        The open file, its pages checked against their CRC when read.

    Raises:
        RecFlowFormatError: Naming the file and what differs from the manifest.
    """
    path = root / relative
    if entry is None:
        raise RecFlowFormatError(
            f"{path}: not listed in {root / 'manifest.json'}; the store is damaged or mixed with another (re-import)"
        )
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        raise RecFlowFormatError(f"{path}: not found; the store is damaged (re-import the release)") from None
    if size != entry["bytes"]:
        raise RecFlowFormatError(
            f"{path}: {size:,} bytes, the manifest says {entry['bytes']:,}; the file changed after the import "
            f"(`stcrank data verify {root}` lists every difference; re-import the release)"
        )
    try:
        file = pq.ParquetFile(path, memory_map=True, page_checksum_verification=True)
    except (pa.ArrowInvalid, OSError) as error:
        raise RecFlowFormatError(f"{path}: not a readable Parquet file ({error}); the store is damaged") from error
    rows = file.metadata.num_rows
    if rows != entry["rows"]:
        raise RecFlowFormatError(
            f"{path}: {rows:,} rows, the manifest says {entry['rows']:,}; the file changed after the import "
            f"(`stcrank data verify {root}` lists every difference; re-import the release)"
        )
    return file


def verify_store(store: str) -> dict[str, Any]:
    """Check every file of a RecFlow store against its manifest: row count, size and SHA-256 of the content.

    Args:
        store: The store directory (``stcrank data import-recflow --dst``).

    Returns:
        A summary: the store, the number of files checked and their total size.

    Raises:
        RecFlowFormatError: Naming every file that is missing, unreadable, or differs from the manifest (and how),
            and every Parquet file the manifest does not list.
    """
    from stcrank.data.recflow.store import read_manifest

    root = Path(store)
    manifest = read_manifest(root)
    files: dict[str, dict[str, Any]] = manifest["files"]
    problems: list[str] = []
    total = 0
    for relative, entry in sorted(files.items()):
        path = root / relative
        if not path.is_file():
            problems.append(f"{relative}: missing")
            continue
        size = path.stat().st_size
        total += size
        differences = []
        if size != entry["bytes"]:
            differences.append(f"{size:,} bytes, manifest {entry['bytes']:,}")
        try:
            rows = parquet_rows(path)
            if rows != entry["rows"]:
                differences.append(f"{rows:,} rows, manifest {entry['rows']:,}")
        except RecFlowFormatError:
            differences.append("not a readable Parquet file")
        digest = sha256_of(path)
        if digest != entry["sha256"]:
            differences.append(f"content SHA-256 {digest[:12]}..., manifest {entry['sha256'][:12]}...")
        if differences:
            problems.append(f"{relative}: " + "; ".join(differences))
    unlisted = sorted(
        relative
        for relative in (path.relative_to(root) for path in root.rglob("*.parquet"))
        if relative.as_posix() not in files and not any(part.startswith(".") for part in relative.parts)
    )
    problems += [f"{relative.as_posix()}: not in the manifest" for relative in unlisted]
    if problems:
        raise RecFlowFormatError(
            f"{root}: {len(problems)} of {len(files)} files differ from the manifest: "
            + " | ".join(problems[:20])
            + (f" | and {len(problems) - 20} more" if len(problems) > 20 else "")
            + "; re-import the release"
        )
    return {"store": str(root), "files": len(files), "bytes": total, "verified": True}
