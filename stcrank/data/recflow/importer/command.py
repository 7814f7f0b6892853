"""The ``import-recflow`` command: choose the days, import them one by one, write the manifest, swap the store in."""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

from stcrank.data.recflow.errors import MissingDayError, RecFlowFormatError
from stcrank.data.recflow.importer.coverage import DEFAULT_MIN_JOIN_COVERAGE
from stcrank.data.recflow.importer.day import DayOptions, import_one_day
from stcrank.data.recflow.importer.destination import StoreDestination
from stcrank.data.recflow.importer.killpoints import kill_point
from stcrank.data.recflow.importer.official_tests import import_official_tests
from stcrank.data.recflow.importer.rows import Accumulator
from stcrank.data.recflow.importer.sizes import feature_sizes, read_id_cnt
from stcrank.data.recflow.importer.ubm import UbmSource
from stcrank.data.recflow.importer.writing import Clock
from stcrank.data.recflow.integrity import describe_files
from stcrank.data.recflow.official import ReleaseLayout, feather_num_rows
from stcrank.data.recflow.schema import (
    OTHERS_DIR,
    STAGE_PRIORITY,
    STORE_FORMAT,
    STORE_FORMAT_VERSION,
    STORE_STAGES,
    is_date,
)
from stcrank.errors import ConfigError
from stcrank.io import OutputError

logger = logging.getLogger(__name__)


DEFAULT_CHUNK_ROWS = 2_000_000
"""Default ``all_stage`` rows per chunk of a streamed import."""


def _describe(clock: Clock, root: Path, folder: Path) -> dict[str, dict[str, Any]]:
    """The manifest entries (rows, bytes, SHA-256) of a folder's Parquet files, timed as ``checksums``."""
    with clock("checksums"):
        return describe_files(root, folder)


def _check_options(chunk_rows: int | None, ubm: str, min_join_coverage: float) -> None:
    if chunk_rows is not None and chunk_rows < 1:
        raise ConfigError(f"--chunk_rows must be >= 1 (or null to read days whole), got {chunk_rows}")
    if ubm not in ("pickle", "all_stage", "none"):
        raise ConfigError(f"--ubm must be pickle, all_stage or none, got {ubm!r}")
    if not 0 <= min_join_coverage <= 1:
        raise ConfigError(f"--min_join_coverage must lie in [0, 1], got {min_join_coverage}")


def _unusable(layout: ReleaseLayout, date: str) -> str | None:
    """Why a day cannot be imported (a required file missing, or no rows), or None."""
    files = layout.day(date)
    missing = files.missing()
    if missing:
        return "missing " + ", ".join(str(p.relative_to(layout.root)) for p in missing)
    empty = [path for path in (files.all_stage, files.realshow) if feather_num_rows(path) == 0]
    if empty:
        return "no rows in " + ", ".join(str(p.relative_to(layout.root)) for p in empty)
    return None


def _choose_days(
    layout: ReleaseLayout, days: list[str] | None, on_missing_day: str
) -> tuple[list[str], dict[str, str]]:
    bad = [day for day in days or () if not is_date(day)]
    if bad:
        raise ConfigError(f"--days {bad[0]!r} is not a date; expected YYYY-MM-DD dates")
    wanted = sorted(set(days)) if days is not None else layout.calendar()
    if not wanted:
        raise RecFlowFormatError(f"{layout.root}: no day found; expected files like all_stage/2024-01-13.feather")
    skipped: dict[str, str] = {}
    chosen: list[str] = []
    for date in wanted:
        reason = _unusable(layout, date)
        if reason is None:
            chosen.append(date)
            continue
        if on_missing_day == "error":
            raise MissingDayError(
                f"{layout.root}: day {date} cannot be imported ({reason}); pass --on_missing_day skip to leave it out"
            )
        logger.warning("import-recflow: skipping %s (%s)", date, reason)
        skipped[date] = reason
    if not chosen:
        reasons = "; ".join(f"{date}: {reason}" for date, reason in skipped.items())
        raise MissingDayError(f"{layout.root}: no requested day can be imported ({reasons}); check --src and --days")
    return chosen, skipped


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
    min_join_coverage: float = DEFAULT_MIN_JOIN_COVERAGE,
) -> dict:
    """Convert the official RecFlow release into stcrank's columnar store.

    Reads ``all_stage/``, ``realshow/``, ``seq_effective_50_dict/``, ``ubm_seq_request_id_dict/`` and ``others/``
    (``request_id_dict/`` duplicates ``all_stage`` and is not read), and writes Parquet partitions, one per day,
    plus ``manifest.json`` with every file's row count and checksum. The store is written next to ``dst`` and
    put in its place only when complete, under a lock: an interrupted import leaves ``dst`` as it was, and
    running it again gives the same store as a clean import. Pickles are read by stcrank's own pickle reader,
    which builds only dicts, ints and checked integer arrays (``docs/data_formats.md`` has the trust model), and
    every value is checked against its column's domain.

    Args:
        src: The release directory (holding ``all_stage/``, ``realshow/``, ``others/``...).
        dst: The store directory to write: new, empty, or a store to replace (with ``overwrite``); never the
            release or a folder holding it.
        test_day: The held-out day (``YYYY-MM-DD``); default the last imported day.
        days: Import only these days; default every day found.
        on_missing_day: ``"error"`` stops on a day that lacks a required file, has no rows, or is a calendar
            gap; ``"skip"`` leaves it out, logs it and records it in the manifest.
        overwrite: Replace an existing store at ``dst`` (only a RecFlow store; it is replaced once the new one
            is complete).
        chunk_rows: Stream each day's ``all_stage`` in chunks of about this many rows (a request is never split:
            one straddling two chunks is carried over whole), writing Parquet row groups as it goes, so memory is
            bounded by the chunk instead of the day. A day whose rows are not grouped by increasing request id is
            read whole (with a log line). None reads every day whole.
        ubm: Source of each day's ``ubm`` table: ``"pickle"`` reads ``ubm_seq_request_id_dict`` (slow: one
            Python object per stage array); ``"all_stage"`` derives the ``rank_pos`` rows of the referenced past
            requests from the days this import has written (the same rows; requests of days before the first
            imported day get none); ``"none"`` writes no ``ubm`` table.
        min_join_coverage: Smallest fraction of a day's keys that each file joined to it must match (the
            requests with ``seq_effective_50_dict`` and with ``realshow``, the referenced past requests with
            ``ubm_seq_request_id_dict``, the exposed videos with ``realshow_video_info_daily``); a day under it
            stops the import (a file of another day matches none). Every coverage goes to the manifest, and a
            partial one is logged. 0 accepts any.

    Returns:
        The manifest.

    Raises:
        RecFlowFormatError: A file is truncated, corrupt, of the wrong type, holds a value outside its column's
            domain, or joins too few of the day's keys (the message names the file and the column);
            :class:`~stcrank.data.recflow.errors.MissingDayError` for a missing or empty day;
            :class:`~stcrank.data.recflow.pickles.UnsafePickleError` for a pickle naming a global it may not.
        StoreDestinationError: ``dst`` is the release, holds other files, is a store without ``overwrite``, or
            another import into it is running.
        OutputError: The disk filled up or refused a write (naming the file); ``dst`` is left as it was.
    """
    started = time.perf_counter()
    _check_options(chunk_rows, ubm, min_join_coverage)
    layout = ReleaseLayout(src)
    chosen, skipped = _choose_days(layout, days, on_missing_day)
    test_day = test_day if test_day is not None else chosen[-1]
    if test_day not in chosen:
        raise ConfigError(f"--test_day {test_day} is not among the imported days {chosen[0]} .. {chosen[-1]}")
    options = DayOptions(chunk_rows=chunk_rows, ubm=ubm, min_join_coverage=min_join_coverage)
    try:
        return _import_days(layout, Path(dst), overwrite, chosen, skipped, test_day, options, started)
    except OutputError as error:
        raise OutputError(f"{error} (--dst {dst} was left as it was)") from error


def _import_days(
    layout: ReleaseLayout,
    dst: Path,
    overwrite: bool,
    chosen: list[str],
    skipped: dict[str, str],
    test_day: str,
    options: DayOptions,
    started: float,
) -> dict[str, Any]:
    """Import the chosen days into a staged store, write its manifest and swap it in place of ``dst``."""
    ubm, min_join_coverage, chunk_rows = options.ubm, options.min_join_coverage, options.chunk_rows
    with StoreDestination(dst, layout.root, overwrite) as destination:
        id_cnt = read_id_cnt(layout)
        acc = Accumulator()
        clock = Clock()
        rows: dict[str, Any] = {}
        files: dict[str, dict[str, Any]] = {}
        written: list[Path] = []  # partitions of this import, the only ones a derived UBM table reads
        # The official test files depend on no day, and a day's files are hashed once written: both run on
        # threads beside the days (the thread of the test files stops early if a day fails).
        tests_acc = Accumulator()
        stop = threading.Event()
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="import-background") as background:
            try:
                tests = background.submit(
                    import_official_tests, layout, destination.root, tests_acc, chunk_rows, clock, stop
                )
                described: list[Future[dict[str, dict[str, Any]]]] = []
                for date in chosen:
                    day_started = time.perf_counter()
                    partition = destination.partition(date)
                    rows[date] = import_one_day(layout.day(date), partition, acc, options, written)
                    described.append(background.submit(_describe, clock, destination.root, partition))
                    written.append(partition)
                    rows[date]["seconds"] = round(time.perf_counter() - day_started, 3)
                    logger.info(
                        "import-recflow: %s: %d stage rows in %.1fs",
                        date,
                        rows[date]["all_stage"],
                        rows[date]["seconds"],
                    )
                    kill_point("day-committed")
                with clock("wait_background"):
                    official_tests = tests.result()
                    for future in described:
                        files.update(future.result())
            except BaseException:
                stop.set()
                raise
        acc.merge(tests_acc)
        files.update(_describe(clock, destination.root, destination.root / OTHERS_DIR))
        kill_point("official-tests")
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
            "min_join_coverage": min_join_coverage,
            "stages": list(STORE_STAGES),
            "stage_priority": dict(STAGE_PRIORITY),
            "feature_sizes": feature_sizes(id_cnt, acc),
            "id_cnt": id_cnt,
            "observed_max_id": acc.observed_max,
            "official_tests": official_tests,
            "files": files,
            "rows": rows,
            "totals": totals,
            "seconds": round(time.perf_counter() - started, 3),
            "phase_seconds": clock.seconds,
            "phase_cpu_seconds": clock.cpu_seconds,
        }
        destination.commit(manifest)
    return manifest
