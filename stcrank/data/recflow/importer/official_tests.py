"""The official test files (``others/*_test.feather``) copied into the store's ``others/``."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from stcrank.data.recflow.domains import ROW_DOMAINS
from stcrank.data.recflow.importer.rows import Accumulator, group_rows
from stcrank.data.recflow.importer.writing import PARQUET_OPTIONS, STORE_FILE, Clock, store_table
from stcrank.data.recflow.official import ReleaseLayout, feather_column_names, iter_feather_tables
from stcrank.data.recflow.schema import OTHERS_DIR, STAGES, TEST_FILES
from stcrank.io import writing

logger = logging.getLogger(__name__)


TEST_COLUMNS: tuple[str, ...] = ("request_id", "user_id", "video_id", *STAGES, "effective_view")
"""Columns kept from the official test files (those present): enough to rebuild their candidate sets."""


def _request_counts(request_id: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct request ids of a chunk and their rows (runs when the rows are grouped by increasing id)."""
    _, ids, lengths = group_rows(request_id)
    if len(ids) < 2 or bool(np.all(ids[1:] > ids[:-1])):
        return ids, lengths
    return np.unique(request_id, return_counts=True)


class ImportStoppedError(Exception):
    """The import stopped (a day failed) while the official test files were being copied."""


def import_official_tests(
    layout: ReleaseLayout,
    dst: Path,
    acc: Accumulator,
    chunk_rows: int | None = None,
    clock: Clock | None = None,
    stop: threading.Event | None = None,
) -> dict[str, Any]:
    """Copy the official test files' useful columns into ``others/``, chunk by chunk when ``chunk_rows`` is set.

    Every column is checked against its domain (:data:`~stcrank.data.recflow.domains.ROW_DOMAINS`) and kept as
    int64; the ids are observed for the feature sizes (a model evaluated on these files embeds them). Nothing
    here depends on the days, so the import runs it on a thread of its own, beside them (``clock`` gets its time
    under ``official_tests``; ``stop``, once set, ends it at the next chunk with :class:`ImportStoppedError`).
    """
    clock = clock or Clock()
    out: dict[str, Any] = {}
    for name in TEST_FILES:
        path = layout.test_file(name)
        if path is None:
            continue
        with clock("official_tests"):
            out[name] = _import_test_file(path, dst / OTHERS_DIR / f"{name}.parquet", acc, chunk_rows, stop)
    return out


def _import_test_file(
    path: Path, target: Path, acc: Accumulator, chunk_rows: int | None, stop: threading.Event | None
) -> dict[str, Any]:
    names = feather_column_names(path)
    wanted = list(dict.fromkeys(["request_id", "video_id", "effective_view", *(c for c in TEST_COLUMNS if c in names)]))
    n_rows = 0
    flags = dict.fromkeys((s for s in STAGES if s in wanted), 0)
    ids, counts = [], []
    writer: pq.ParquetWriter | None = None
    try:
        for checked in iter_feather_tables(path, {c: ROW_DOMAINS[c] for c in wanted}, chunk_rows):
            table = store_table(dict(zip(checked.column_names, checked.columns, strict=True)))
            if stop is not None and stop.is_set():
                raise ImportStoppedError(str(path))
            for feature in ("user_id", "video_id"):
                if feature in table.column_names and table.num_rows:
                    acc.observe_max(feature, pc.max(table.column(feature)).as_py())
            with writing(target, STORE_FILE):
                writer = writer or pq.ParquetWriter(target, table.schema, **PARQUET_OPTIONS)
                writer.write_table(table)
            n_rows += table.num_rows
            for stage in flags:
                flags[stage] += int(pc.sum(table.column(stage)).as_py() or 0)
            unique, count = _request_counts(table.column("request_id").to_numpy())
            ids.append(unique)
            counts.append(count)
    finally:
        if writer is not None:
            with writing(target, STORE_FILE):
                writer.close()
    # a request split over chunks is counted once, with all its rows
    unique, inverse = np.unique(np.concatenate(ids), return_inverse=True)
    per_request = np.bincount(inverse, weights=np.concatenate(counts), minlength=len(unique))
    return {
        "source": path.name,
        "rows": n_rows,
        "requests": len(unique),
        "max_rows_per_request": int(per_request.max(initial=0)),
        "flag_rows": flags,
    }
