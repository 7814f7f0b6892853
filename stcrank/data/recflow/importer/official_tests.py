"""The official test files (``others/*_test.feather``) copied into the store's ``others/``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from stcrank.data.recflow.domains import ROW_DOMAINS
from stcrank.data.recflow.importer.rows import Accumulator
from stcrank.data.recflow.importer.writing import PARQUET_OPTIONS, STORE_FILE
from stcrank.data.recflow.official import ReleaseLayout, feather_column_names, iter_feather_columns
from stcrank.data.recflow.schema import OTHERS_DIR, STAGES, TEST_FILES
from stcrank.io import writing

logger = logging.getLogger(__name__)


TEST_COLUMNS: tuple[str, ...] = ("request_id", "user_id", "video_id", *STAGES, "effective_view")
"""Columns kept from the official test files (those present): enough to rebuild their candidate sets."""


def import_official_tests(
    layout: ReleaseLayout, dst: Path, acc: Accumulator, chunk_rows: int | None = None
) -> dict[str, Any]:
    """Copy the official test files' useful columns into ``others/``, chunk by chunk when ``chunk_rows`` is set.

    Every column is checked against its domain (:data:`~stcrank.data.recflow.domains.ROW_DOMAINS`) and kept as
    int64; the ids are observed for the feature sizes (a model evaluated on these files embeds them).
    """
    out: dict[str, Any] = {}
    for name in TEST_FILES:
        path = layout.test_file(name)
        if path is None:
            continue
        names = feather_column_names(path)
        wanted = list(
            dict.fromkeys(["request_id", "video_id", "effective_view", *(c for c in TEST_COLUMNS if c in names)])
        )
        target = dst / OTHERS_DIR / f"{name}.parquet"
        n_rows = 0
        flags = dict.fromkeys((s for s in STAGES if s in wanted), 0)
        ids, counts = [], []
        writer: pq.ParquetWriter | None = None
        try:
            for checked in iter_feather_columns(path, {c: ROW_DOMAINS[c] for c in wanted}, chunk_rows):
                for feature in ("user_id", "video_id"):
                    if feature in checked:
                        acc.observe(feature, checked[feature])
                columns = {c: values.astype(np.int64) for c, values in checked.items()}
                table = pa.table(columns)
                with writing(target, STORE_FILE):
                    writer = writer or pq.ParquetWriter(target, table.schema, **PARQUET_OPTIONS)
                    writer.write_table(table)
                n_rows += len(columns["request_id"])
                for stage in flags:
                    flags[stage] += int(columns[stage].sum())
                unique, count = np.unique(columns["request_id"], return_counts=True)
                ids.append(unique)
                counts.append(count)
        finally:
            if writer is not None:
                with writing(target, STORE_FILE):
                    writer.close()
        # a request split over chunks is counted once, with all its rows
        unique, inverse = np.unique(np.concatenate(ids), return_inverse=True)
        per_request = np.bincount(inverse, weights=np.concatenate(counts), minlength=len(unique))
        out[name] = {
            "source": path.name,
            "rows": n_rows,
            "requests": len(unique),
            "max_rows_per_request": int(per_request.max(initial=0)),
            "flag_rows": flags,
        }
    return out
