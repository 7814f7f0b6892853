"""Writing a partition's Parquet tables (whole or row group by row group) and timing the phases of a day.

A write that fails for a full disk, a quota or a refused permission raises an
:class:`~stcrank.io.OutputError` naming the file (:func:`stcrank.io.writing`); the import stops and ``--dst``
keeps what it held.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from stcrank.io import writing

logger = logging.getLogger(__name__)


PARQUET_OPTIONS: dict[str, Any] = {
    "compression": "lz4",
    "use_dictionary": False,
    "write_statistics": False,
    "write_page_checksum": True,
}
"""How store tables are written: fast to write and to read back (high-cardinality integer columns), with a CRC
per data page so that every read detects a damaged page."""


class Clock:
    """Seconds spent per phase of a day's import (reported in the manifest)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        """Time the ``with`` block as part of ``phase``."""
        started = time.perf_counter()
        yield
        self.seconds[phase] = round(self.seconds.get(phase, 0.0) + time.perf_counter() - started, 3)


STORE_FILE = "the store file"
"""How a full-disk error names a file of the new store."""


def write_table(table: pa.Table, path: Path) -> None:
    """Write one whole table of the store (a failed write names ``path``)."""
    with writing(path, STORE_FILE):
        pq.write_table(table, path, **PARQUET_OPTIONS)


def write_tables(partition: Path, tables: Mapping[str, pa.Table]) -> None:
    """Write a day's tables side by side (pyarrow releases the GIL while encoding)."""
    with writing(partition, "the partition"):
        partition.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=min(len(tables), os.cpu_count() or 1)) as pool:
        futures = [pool.submit(write_table, table, partition / f"{name}.parquet") for name, table in tables.items()]
        for future in futures:
            future.result()


class ChunkWriter:
    """Parquet files of a partition written row group by row group (one schema, fixed by the first chunk).

    Writes run on one background thread, in order, so that encoding chunk ``i`` (pyarrow releases the GIL)
    overlaps reading and converting chunk ``i + 1``; at most ``backlog`` writes wait, which bounds the memory held
    by tables not yet written.
    """

    def __init__(self, partition: Path, backlog: int = 2) -> None:
        with writing(partition, "the partition"):
            partition.mkdir(parents=True, exist_ok=True)
        self.partition = partition
        self.writers: dict[str, pq.ParquetWriter] = {}
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="parquet-writer")
        self.pending: list[Future[None]] = []
        self.backlog = backlog

    def _write(self, name: str, table: pa.Table) -> None:
        path = self.partition / f"{name}.parquet"
        with writing(path, STORE_FILE):
            if name not in self.writers:
                self.writers[name] = pq.ParquetWriter(path, table.schema, **PARQUET_OPTIONS)
            self.writers[name].write_table(table)

    def write(self, name: str, table: pa.Table) -> None:
        """Queue a row group of ``name``; waits while ``backlog`` writes are queued (raises a failed write's error)."""
        while len(self.pending) >= self.backlog:
            self.pending.pop(0).result()
        self.pending.append(self.pool.submit(self._write, name, table))

    def close(self) -> None:
        """Finish the queued writes and close the files (the first error of a write is raised)."""
        try:
            for future in self.pending:
                future.result()
        finally:
            self.pending.clear()
            self.pool.shutdown(wait=True)
            for name, writer in self.writers.items():
                with writing(self.partition / f"{name}.parquet", STORE_FILE):
                    writer.close()
