"""The ``import-recflow`` command: choose the days, import them one by one, write the manifest last."""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any, Literal

from stcrank.data.recflow.errors import MissingDayError, RecFlowFormatError
from stcrank.data.recflow.importer.day import import_one_day
from stcrank.data.recflow.importer.destination import commit_partition, prepare_destination, write_json_atomically
from stcrank.data.recflow.importer.official_tests import import_official_tests
from stcrank.data.recflow.importer.rows import Accumulator
from stcrank.data.recflow.importer.sizes import feature_sizes, read_id_cnt
from stcrank.data.recflow.importer.ubm import UbmSource
from stcrank.data.recflow.official import ReleaseLayout
from stcrank.data.recflow.schema import (
    DAYS_DIR,
    MANIFEST,
    STAGE_PRIORITY,
    STORE_FORMAT,
    STORE_FORMAT_VERSION,
    STORE_STAGES,
)

logger = logging.getLogger(__name__)


DEFAULT_CHUNK_ROWS = 2_000_000
"""Default ``all_stage`` rows per chunk of a streamed import."""


def import_recflow(
    *,
    src: str,
    dst: str,
    test_day: str | None = None,
    days: list[str] | None = None,
    on_missing_day: Literal["error", "skip"] = "error",
    overwrite: bool = False,
    chunk_rows: int | None = DEFAULT_CHUNK_ROWS,
    ubm: UbmSource = "pickle",
) -> dict:
    """Convert the official RecFlow release into stcrank's columnar store.

    Reads ``all_stage/``, ``realshow/``, ``seq_effective_50_dict/``, ``ubm_seq_request_id_dict/`` and ``others/``
    (``request_id_dict/`` duplicates ``all_stage`` and is not read), and writes Parquet partitions, one per day,
    plus ``manifest.json`` last. Pickles are read with a restricted unpickler that refuses anything but dicts,
    numpy arrays and scalars.

    Args:
        src: The release directory (holding ``all_stage/``, ``realshow/``, ``others/``...).
        dst: The store directory to write.
        test_day: The held-out day (``YYYY-MM-DD``); default the last imported day.
        days: Import only these days; default every day found.
        on_missing_day: ``"error"`` stops on a day that lacks a required file (or a calendar gap);
            ``"skip"`` leaves it out, logs it and records it in the manifest.
        overwrite: Replace an existing store at ``dst``.
        chunk_rows: Stream each day's ``all_stage`` in chunks of about this many rows (a request is never split:
            one straddling two chunks is carried over whole), writing Parquet row groups as it goes, so memory is
            bounded by the chunk instead of the day. A day whose rows are not grouped by increasing request id is
            read whole (with a log line). None reads every day whole.
        ubm: Source of each day's ``ubm`` table: ``"pickle"`` reads ``ubm_seq_request_id_dict`` (slow: one
            Python object per stage array); ``"all_stage"`` derives the ``rank_pos`` rows of the referenced past
            requests from the days already imported (the same rows; requests of days before the first imported
            day get none); ``"none"`` writes no ``ubm`` table.

    Returns:
        The manifest.

    Raises:
        RecFlowFormatError: A file is truncated or corrupt, or lacks a column or has a wrong dtype (the message
            names the file and the column); :class:`~stcrank.data.recflow.errors.MissingDayError` for a missing day.
        UnsafePickleError: A pickle names a global other than containers, numpy arrays and scalars.
    """
    started = time.perf_counter()
    if chunk_rows is not None and chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1 or None, got {chunk_rows}")
    if ubm not in ("pickle", "all_stage", "none"):
        raise ValueError(f"ubm must be 'pickle', 'all_stage' or 'none', got {ubm!r}")
    layout = ReleaseLayout(src)
    wanted = sorted(days) if days is not None else layout.calendar()
    if not wanted:
        raise RecFlowFormatError(f"{layout.root}: no day found; expected files like all_stage/2024-01-13.feather")
    skipped: dict[str, str] = {}
    chosen: list[str] = []
    for date in wanted:
        missing = layout.day(date).missing()
        if not missing:
            chosen.append(date)
            continue
        reason = "missing " + ", ".join(str(p.relative_to(layout.root)) for p in missing)
        if on_missing_day == "error":
            raise MissingDayError(f"{layout.root}: day {date} is incomplete ({reason}); pass on_missing_day='skip'")
        logger.warning("import-recflow: skipping %s (%s)", date, reason)
        skipped[date] = reason
    if not chosen:
        raise MissingDayError(f"{layout.root}: every requested day is incomplete: {skipped}")
    test_day = test_day or chosen[-1]
    if test_day not in chosen:
        raise ValueError(f"test_day {test_day} is not among the imported days {chosen[0]} .. {chosen[-1]}")

    root = Path(dst)
    prepare_destination(root, overwrite)
    id_cnt = read_id_cnt(layout)
    acc = Accumulator()
    rows: dict[str, Any] = {}
    for date in chosen:
        day_started = time.perf_counter()
        final = root / DAYS_DIR / date
        temporary = root / DAYS_DIR / f".{date}.partial-{os.getpid()}"
        try:
            rows[date] = import_one_day(layout.day(date), temporary, acc, chunk_rows, ubm, root)
        except BaseException:
            shutil.rmtree(temporary, ignore_errors=True)
            raise
        commit_partition(temporary, final)
        rows[date]["seconds"] = round(time.perf_counter() - day_started, 3)
        logger.info("import-recflow: %s: %d stage rows in %.1fs", date, rows[date]["all_stage"], rows[date]["seconds"])

    totals = {
        key: sum(r[key] for r in rows.values())
        for key in ("all_stage", "requests", "exposures", "requests_over_6_exposures", "exposures_beyond_6")
    }
    manifest = {
        "format": STORE_FORMAT,
        "format_version": STORE_FORMAT_VERSION,
        "source": str(layout.root.resolve()),
        "days": chosen,
        "train_days": [d for d in chosen if d != test_day],
        "test_day": test_day,
        "skipped_days": skipped,
        "utc_offset_hours": 8,
        "id_shift": 1,
        "ubm_source": ubm,
        "stages": list(STORE_STAGES),
        "stage_priority": dict(STAGE_PRIORITY),
        "feature_sizes": feature_sizes(id_cnt, acc),
        "id_cnt": id_cnt,
        "observed_max_id": acc.observed_max,
        "official_tests": import_official_tests(layout, root, chunk_rows),
        "rows": rows,
        "totals": totals,
        "seconds": round(time.perf_counter() - started, 3),
    }
    write_json_atomically(root / MANIFEST, manifest)
    return manifest
