"""Writing a partition's Parquet tables (whole or row group by row group) and timing the phases of a day.

A write that fails for a full disk, a quota or a refused permission raises an
:class:`~stcrank.io.OutputError` naming the file (:func:`stcrank.io.writing`); the import stops and ``--dst``
keeps what it held.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from stcrank.io import writing

logger = logging.getLogger(__name__)


PARQUET_OPTIONS: dict[str, Any] = {
    "compression": "lz4",
    "use_dictionary": False,
    "column_encoding": "BYTE_STREAM_SPLIT",
    "write_statistics": False,
    "write_page_checksum": True,
}
"""How store tables are written: fast to write and to read back (high-cardinality integer columns), with a CRC
per data page so that every read detects a damaged page. Byte-stream-split encoding stores the k-th bytes of a
page's values together: the high bytes of small integers (every int8 and int32 column is 4 bytes a value in
Parquet) are then runs of zeros, which LZ4 compresses fast, so files are about 35% smaller and quicker to write and
to read than plainly encoded (pyarrow 16 or later reads them)."""


def _required(data_type: pa.DataType) -> pa.DataType:
    if pa.types.is_fixed_size_list(data_type):
        item = pa.field(data_type.value_field.name, data_type.value_type, nullable=False)
        return pa.list_(item, data_type.list_size)
    return data_type


def store_table(columns: Mapping[str, np.ndarray | pa.Array | pa.ChunkedArray]) -> pa.Table:
    """A table of the store: every column (and list item) declared non-null, as the importer's columns are.

    Parquet then stores no definition levels (one per value of a nullable column, even without nulls), which is a
    third of the time to write a table of small integer columns.

    Args:
        columns: Name -> numpy array or Arrow array (fixed-size lists included); none holds a null.
    """
    arrays: list[pa.Array | pa.ChunkedArray] = []
    for values in columns.values():
        array = values if isinstance(values, (pa.Array, pa.ChunkedArray)) else pa.array(values)
        required = _required(array.type)
        if required != array.type:
            array = array.view(required)  # the same buffers: only the item's nullability changes
        arrays.append(array)
    fields = [pa.field(name, array.type, nullable=False) for name, array in zip(columns, arrays, strict=True)]
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


class Clock:
    """Wall and CPU seconds spent per phase of a day's import (reported in the manifest).

    Phases may run on several threads at once (reading ahead, writing behind): each ``with`` block adds its wall
    time to :attr:`seconds` and the CPU time of the thread that ran it to :attr:`cpu_seconds`, so that the CPU
    seconds of a phase are its cost whatever ran in parallel with it.
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.cpu_seconds: dict[str, float] = {}
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        """Time the ``with`` block as part of ``phase``."""
        started, cpu_started = time.perf_counter(), time.thread_time()
        try:
            yield
        finally:
            self.add(phase, time.perf_counter() - started, time.thread_time() - cpu_started)

    def add(self, phase: str, seconds: float, cpu_seconds: float) -> None:
        """Add time measured elsewhere to ``phase`` (thread-safe)."""
        with self._lock:
            self.seconds[phase] = round(self.seconds.get(phase, 0.0) + seconds, 3)
            self.cpu_seconds[phase] = round(self.cpu_seconds.get(phase, 0.0) + cpu_seconds, 3)


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

    def __init__(self, partition: Path, backlog: int = 2, clock: Clock | None = None) -> None:
        with writing(partition, "the partition"):
            partition.mkdir(parents=True, exist_ok=True)
        self.clock = clock or Clock()
        self.partition = partition
        self.writers: dict[str, pq.ParquetWriter] = {}
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="parquet-writer")
        self.pending: list[Future[None]] = []
        self.backlog = backlog

    def _write(self, name: str, table: pa.Table) -> None:
        path = self.partition / f"{name}.parquet"
        with self.clock("encode_parquet"), writing(path, STORE_FILE):
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
