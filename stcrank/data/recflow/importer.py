"""Convert the official RecFlow release into stcrank's columnar store (Parquet, one partition per day).

The store (``docs/data_formats.md`` has the full description)::

    manifest.json                     written last: format, days, test day, feature sizes, row counts
    days/{date}/requests.parquet      one row per request: context codes, user ids, the behaviour sequence
                                      (fixed-size lists of 50), stage_count (fixed-size list of 8: CSR)
    days/{date}/candidates.parquet    every stage row, sorted by (request, stage), aligned with stage_count
    days/{date}/exposures.parquet     the realshow rows in file order, with request_row into requests
    days/{date}/corpus.parquet        exposed video ids accumulated up to this day
    days/{date}/ubm.parquet           the UBM dict's stage rows keyed by past request_id (when present)
    others/{retrieval_test,coarse_rank_test,rank_test}.parquet   the official test files (when present)

Each day is written into ``days/.{date}.partial-{pid}`` and renamed into place when complete, and the manifest is
written last (also through a rename), so a killed import never leaves a store or a partition that reads as
complete. Memory is bounded by one day: Feather files are memory-mapped, pickles are read one at a time with the
restricted unpickler, and nothing goes through pandas.

IDs stay raw and 0-based in the store; the batch collate shifts every id by +1 so that 0 is padding. Time codes
(weekday, hour, minute) are computed in UTC+8, never in the host's timezone.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from stcrank.data.recflow.errors import MissingDayError, RecFlowFormatError
from stcrank.data.recflow.official import (
    ColumnKind,
    DayFiles,
    ReleaseLayout,
    feather_column_names,
    read_feather_columns,
)
from stcrank.data.recflow.pickles import load_pickle
from stcrank.data.recflow.schema import (
    ALL_STAGE_COLUMNS,
    BINARY_FEEDBACK_COLUMNS,
    DAYS_DIR,
    FEEDBACK_COLUMNS,
    ID_CNT_ALIASES,
    ID_CNT_FEATURES,
    ITEM_ID_COLUMNS,
    MANIFEST,
    N_STAGES,
    OTHERS_DIR,
    SEQ_ARRAY_COLUMNS,
    SEQ_LEN,
    SEQ_STORE_COLUMNS,
    STAGE_ARRAY_COLUMNS,
    STAGE_CODE,
    STAGE_PRIORITY,
    STAGES,
    STORE_FORMAT,
    STORE_FORMAT_VERSION,
    STORE_STAGES,
    TEST_FILES,
    TIME_CARDINALITY,
    TIME_CODES,
    USER_COLUMNS,
)
from stcrank.data.recflow.time_features import time_codes

logger = logging.getLogger(__name__)

PARQUET_OPTIONS: dict[str, Any] = {"compression": "lz4", "use_dictionary": False, "write_statistics": False}
"""How store tables are written: fast to write and to read back (high-cardinality integer columns)."""

_UNFLAGGED = STAGE_CODE["unflagged"]
ROW_KINDS: dict[str, ColumnKind] = {
    **dict.fromkeys(ALL_STAGE_COLUMNS, "int32"),
    "request_id": "int64",
    "request_timestamp": "int64",
    "upload_timestamp": "int64",
    **dict.fromkeys((*USER_COLUMNS, *ITEM_ID_COLUMNS), "id"),
    **dict.fromkeys((*STAGES, *BINARY_FEEDBACK_COLUMNS), "binary"),
}
"""How each ``all_stage``/``realshow`` column is checked and narrowed while it is read."""
TEST_COLUMNS: tuple[str, ...] = ("request_id", "user_id", "video_id", *STAGES, "effective_view")
"""Columns kept from the official test files (those present): enough to rebuild their candidate sets."""


@dataclass
class _Accumulator:
    """What the import learns across days (written to the manifest)."""

    observed_max: dict[str, int] = field(default_factory=dict)
    corpus: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def observe(self, name: str, values: np.ndarray) -> None:
        if len(values):
            self.observed_max[name] = max(self.observed_max.get(name, -1), int(values.max()))


def _narrow(values: np.ndarray, dtype: type[np.integer], path: Path, column: str) -> np.ndarray:
    """Cast to a narrower integer type after checking that every value fits."""
    info = np.iinfo(dtype)
    if len(values):
        low, high = int(values.min()), int(values.max())
        if low < info.min or high > info.max:
            raise RecFlowFormatError(
                f"{path}: column {column!r} has values in [{low}, {high}]; expected values that fit {info.dtype}"
            )
    return values.astype(dtype, copy=False)


def _check_ids(values: np.ndarray, path: Path, column: str) -> np.ndarray:
    if len(values) and int(values.min()) < 0:
        raise RecFlowFormatError(
            f"{path}: column {column!r} has negative values (min {int(values.min())}); expected 0-based ids"
        )
    return _narrow(values, np.int32, path, column)


def _stage_codes(columns: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Stage code of each row (the latest stage among its flags; ``unflagged`` if none) and the flag bitmask."""
    n = len(columns["request_id"])
    stage = np.full(n, _UNFLAGGED, dtype=np.int8)
    flags = np.zeros(n, dtype=np.int8)
    for code in reversed(range(len(STAGES))):  # latest stage last, so it wins
        flag = columns[STAGES[code]].astype(bool)
        stage[flag] = code
        flags |= flag.astype(np.int8) << code
    return stage, flags


def _group_rows(request_id: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Runs of equal request ids: (run start positions, run request ids, run lengths). O(n) on grouped files."""
    if not len(request_id):
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    starts = np.flatnonzero(np.r_[True, request_id[1:] != request_id[:-1]])
    lengths = np.diff(np.r_[starts, len(request_id)])
    return starts, request_id[starts], lengths


def _fill_requests(
    ids: np.ndarray,
    sources: list[tuple[Path, Mapping[str, np.ndarray], np.ndarray, np.ndarray]],
) -> dict[str, np.ndarray]:
    """Request-level columns (timestamp, user ids) and a check that every row of a request agrees on them."""
    out = {name: np.zeros(len(ids), dtype=np.int64) for name in ("request_timestamp", *USER_COLUMNS)}
    for _, columns, starts, run_rows in sources:
        for name in out:
            out[name][run_rows] = columns[name][starts]
    for path, columns, starts, run_rows in sources:
        lengths = np.diff(np.r_[starts, len(columns["request_id"])])
        rows = np.repeat(run_rows, lengths)
        for name in ("request_timestamp", "user_id"):
            bad = np.flatnonzero(columns[name] != out[name][rows])
            if len(bad):
                i = bad[0]
                raise RecFlowFormatError(
                    f"{path}: column {name!r} differs within request_id {int(columns['request_id'][i])} "
                    f"({int(columns[name][i])} vs {int(out[name][rows[i]])}); expected one value per request"
                )
    return out


def _item_columns(columns: Mapping[str, np.ndarray], acc: _Accumulator) -> dict[str, np.ndarray]:
    # The columns were range-checked and narrowed while they were read (ROW_KINDS).
    out: dict[str, np.ndarray] = {name: columns[name] for name in ITEM_ID_COLUMNS}
    for name in ITEM_ID_COLUMNS:
        acc.observe(name, out[name])
    out["upload_timestamp"] = columns["upload_timestamp"]
    wday, hour, minute = time_codes(out["upload_timestamp"])
    out.update(upload_wday=wday, upload_hour=hour, upload_minute=minute)
    for name in ("duration", "rank_index", "rerank_index", *FEEDBACK_COLUMNS):
        out[name] = columns[name]
    return out


def _fixed_lists(values: np.ndarray) -> pa.FixedSizeListArray:
    width = values.shape[1]
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), width)


def _read_sequences(path: Path, ids: np.ndarray, acc: _Accumulator) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """The day's ``seq_effective_50_dict`` as one ``[R, 50]`` array per column, aligned with the request ids."""
    raw = load_pickle(path)
    if not isinstance(raw, dict):
        raise RecFlowFormatError(f"{path}: expected a dict request_id -> int64 array (50, 10), got {type(raw)}")
    keys = np.fromiter(raw.keys(), dtype=np.int64, count=len(raw))
    try:
        stacked = np.stack(list(raw.values())) if raw else np.zeros((0, SEQ_LEN, len(SEQ_ARRAY_COLUMNS)), np.int64)
    except ValueError as error:
        shapes = {np.shape(v) for v in raw.values()}
        raise RecFlowFormatError(
            f"{path}: sequences have shapes {sorted(shapes)[:5]}; expected ({SEQ_LEN}, {len(SEQ_ARRAY_COLUMNS)})"
        ) from error
    if stacked.shape[1:] != (SEQ_LEN, len(SEQ_ARRAY_COLUMNS)) or stacked.dtype.kind not in "iu":
        raise RecFlowFormatError(
            f"{path}: sequences have shape {stacked.shape[1:]} and dtype {stacked.dtype}; expected integer arrays "
            f"of shape ({SEQ_LEN}, {len(SEQ_ARRAY_COLUMNS)})"
        )
    order = np.argsort(keys)
    keys, stacked = keys[order], stacked[order]
    position = np.minimum(np.searchsorted(keys, ids), max(len(keys) - 1, 0))
    found = (keys[position] == ids) if len(keys) else np.zeros(len(ids), dtype=bool)
    seq = np.zeros((len(ids), SEQ_LEN, len(SEQ_ARRAY_COLUMNS)), dtype=np.int64)
    seq[found] = stacked[position[found]]
    valid = seq[:, :, SEQ_ARRAY_COLUMNS.index("time_ms")] > 0
    out: dict[str, np.ndarray] = {}
    for j, name in enumerate(SEQ_ARRAY_COLUMNS):
        column = f"seq_{name}"
        values = seq[:, :, j]
        if name in ITEM_ID_COLUMNS:
            values = _check_ids(values, path, f"column {j} ({name})")
            acc.observe(name, values[valid])
        elif name not in ("time_ms", "request_id", "upload_timestamp"):
            values = _narrow(values, np.int32, path, f"column {j} ({name})")
        out[column] = values
    stats = {
        "requests_without_sequence": int((~found).sum()),
        "sequences_without_request": int(len(keys) - found.sum()),
    }
    return out, stats


def _read_ubm(path: Path) -> tuple[pa.Table, dict[str, int], dict[str, int]]:
    """The day's ``ubm_seq_request_id_dict`` as rows (request_id, stage, the 8 stage-array columns).

    Returns:
        The table, its row counts, and the largest id of each item feature (thread-safe: mutates nothing).
    """
    raw = load_pickle(path)
    if not isinstance(raw, dict):
        raise RecFlowFormatError(f"{path}: expected a dict request_id -> dict stage -> int64 array (n, 8)")
    request_ids: list[int] = []
    stage_names: list[str] = []
    arrays: list[np.ndarray] = []
    try:  # per-request Python is unavoidable here: the pickle is a dict of dicts
        for request_id, stages in raw.items():
            for stage, array in stages.items():
                request_ids.append(request_id)
                stage_names.append(stage)
                arrays.append(array)
    except AttributeError as error:
        raise RecFlowFormatError(f"{path}: a value is not a dict stage -> array ({error}); expected dicts") from error
    n_requests = len(raw)
    del raw
    codes = np.array([STAGE_CODE.get(stage, -1) for stage in stage_names], dtype=np.int8)
    unknown = np.flatnonzero((codes < 0) | (codes == _UNFLAGGED))
    if len(unknown):
        logger.warning("%s: ignored unknown stage keys %s", path, sorted({str(stage_names[i]) for i in unknown}))
        keep = np.setdiff1d(np.arange(len(codes)), unknown)
        arrays = [arrays[i] for i in keep]
        request_ids = [request_ids[i] for i in keep]
        codes = codes[keep]
    width = len(STAGE_ARRAY_COLUMNS)
    try:
        counts = np.fromiter(map(len, arrays), dtype=np.int64, count=len(arrays))
        matrix = np.concatenate(arrays) if arrays else np.zeros((0, width), np.int64)
    except (TypeError, ValueError) as error:
        shapes = sorted({str(np.shape(array)) for array in arrays})[:5]
        raise RecFlowFormatError(f"{path}: stage arrays have shapes {shapes}; expected (n, {width})") from error
    del arrays
    if matrix.ndim != 2 or matrix.shape[1] != width or matrix.dtype.kind not in "iu":
        raise RecFlowFormatError(
            f"{path}: stage arrays have shape (n, {matrix.shape[1:]}) and dtype {matrix.dtype}; expected integer "
            f"arrays (n, {width}) with columns {list(STAGE_ARRAY_COLUMNS)}"
        )
    matrix = np.ascontiguousarray(matrix.T)  # one contiguous row per column
    rid = np.repeat(np.asarray(request_ids, dtype=np.int64), counts)
    stage = np.repeat(codes, counts)
    key = rid * N_STAGES + stage
    order = None if np.all(key[1:] >= key[:-1]) else np.argsort(key, kind="stable")
    columns: dict[str, np.ndarray] = {"request_id": rid, "stage": stage}
    observed: dict[str, int] = {}
    for j, name in enumerate(STAGE_ARRAY_COLUMNS):
        values = matrix[j]
        if name in ITEM_ID_COLUMNS:
            values = _check_ids(values, path, f"column {j} ({name})")
            if len(values):
                observed[name] = int(values.max())
        elif name == "effective_view":
            values = values.astype(np.int8)
        elif name != "upload_timestamp":
            values = _narrow(values, np.int32, path, f"column {j} ({name})")
        columns[name] = values
    if order is not None:
        columns = {name: values[order] for name, values in columns.items()}
    stats = {"ubm_requests": n_requests, "ubm_rows": len(rid), "ubm_unknown_stage_keys": len(unknown)}
    return pa.table(columns), stats, observed


def _read_corpus(files: DayFiles, exposed: np.ndarray, acc: _Accumulator) -> tuple[np.ndarray, str]:
    if files.realshow_video_info_daily.is_file():
        video = read_feather_columns(files.realshow_video_info_daily, ["video_id"])["video_id"]
        corpus = np.unique(_check_ids(video, files.realshow_video_info_daily, "video_id"))
        acc.observe("video_id", corpus)
        acc.corpus = np.union1d(acc.corpus, corpus)
        return corpus.astype(np.int32), "realshow_video_info_daily"
    acc.corpus = np.union1d(acc.corpus, exposed)
    return acc.corpus.astype(np.int32), "exposures"


class _Clock:
    """Seconds spent per phase of a day's import (reported in the manifest)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        started = time.perf_counter()
        yield
        self.seconds[phase] = round(self.seconds.get(phase, 0.0) + time.perf_counter() - started, 3)


@dataclass
class _RequestIndex:
    """The day's sorted request ids and where the rows of each source file belong."""

    ids: np.ndarray
    stage_row_request: np.ndarray  # request row of every all_stage row
    exposure_row_request: np.ndarray  # request row of every realshow row
    columns: dict[str, np.ndarray]  # request_timestamp and user ids per request


def _index_requests(
    files: DayFiles, stage_rows: Mapping[str, np.ndarray], exposure_rows: Mapping[str, np.ndarray]
) -> _RequestIndex:
    stage_starts, stage_run_ids, stage_run_len = _group_rows(stage_rows["request_id"])
    exp_starts, exp_run_ids, exp_run_len = _group_rows(exposure_rows["request_id"])
    ids = np.unique(np.concatenate([stage_run_ids, exp_run_ids]))
    stage_run_rows = np.searchsorted(ids, stage_run_ids)
    exp_run_rows = np.searchsorted(ids, exp_run_ids)
    columns = _fill_requests(
        ids,
        [
            (files.realshow, exposure_rows, exp_starts, exp_run_rows),
            (files.all_stage, stage_rows, stage_starts, stage_run_rows),
        ],
    )
    return _RequestIndex(
        ids=ids,
        stage_row_request=np.repeat(stage_run_rows, stage_run_len),
        exposure_row_request=np.repeat(exp_run_rows, exp_run_len).astype(np.int32),
        columns=columns,
    )


def _candidates(
    stage_rows: Mapping[str, np.ndarray], index: _RequestIndex, acc: _Accumulator
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """All_stage rows sorted by (request, stage), file order kept within a stage, and the [R, 8] stage counts."""
    stage, flags = _stage_codes(stage_rows)
    key = index.stage_row_request.astype(np.int64) * N_STAGES + stage
    order = None if np.all(key[1:] >= key[:-1]) else np.argsort(key, kind="stable")
    candidates: dict[str, np.ndarray] = {"stage": stage, "flags": flags, **_item_columns(stage_rows, acc)}
    if order is not None:
        candidates = {name: values[order] for name, values in candidates.items()}
    n_requests = len(index.ids)
    stage_count = np.bincount(key, minlength=n_requests * N_STAGES).astype(np.int32).reshape(n_requests, N_STAGES)
    return candidates, stage_count


def _requests_table(
    index: _RequestIndex,
    n_exposures: np.ndarray,
    sequences: Mapping[str, np.ndarray],
    stage_count: np.ndarray,
    acc: _Accumulator,
) -> pa.Table:
    """One row per request: context codes (UTC+8), user ids, the sequences and the CSR stage counts."""
    columns: dict[str, np.ndarray] = {"request_id": index.ids, "request_timestamp": index.columns["request_timestamp"]}
    columns.update(zip(TIME_CODES, time_codes(columns["request_timestamp"] // 1000), strict=True))
    for name in USER_COLUMNS:
        columns[name] = index.columns[name].astype(np.int32)
        acc.observe(name, columns[name])
    columns["n_exposures"] = n_exposures.astype(np.int32)
    return pa.table(
        {
            **{name: pa.array(values) for name, values in columns.items()},
            **{name: _fixed_lists(sequences[name]) for name in SEQ_STORE_COLUMNS},
            "stage_count": _fixed_lists(stage_count),
        }
    )


def _import_day(files: DayFiles, partition: Path, acc: _Accumulator) -> dict[str, Any]:
    """Convert one day into a partition directory; returns the day's row counts and phase timings."""
    clock = _Clock()
    with clock("read_feather"):
        stage_rows = read_feather_columns(files.all_stage, ROW_KINDS)
        exposure_rows = read_feather_columns(files.realshow, ROW_KINDS)
    with clock("index"):
        index = _index_requests(files, stage_rows, exposure_rows)
        candidates, stage_count = _candidates(stage_rows, index, acc)
        exposures = {
            "request_row": index.exposure_row_request,
            "request_id": exposure_rows["request_id"],
            **_item_columns(exposure_rows, acc),
        }
        n_exposures = np.bincount(exposures["request_row"], minlength=len(index.ids))
    with clock("sequences"):
        sequences, seq_stats = _read_sequences(files.seq_effective_50_dict, index.ids, acc)
        corpus, corpus_source = _read_corpus(files, np.unique(exposures["video_id"]).astype(np.int64), acc)
    tables = {
        "requests": _requests_table(index, n_exposures, sequences, stage_count, acc),
        "candidates": pa.table(candidates),
        "exposures": pa.table(exposures),
        "corpus": pa.table({"video_id": corpus}),
    }
    stage = candidates["stage"]
    flags = candidates["flags"]
    stats: dict[str, Any] = {
        "all_stage": len(stage),
        "requests": len(index.ids),
        "candidates": len(stage),
        "exposures": len(exposures["request_row"]),
        "requests_over_6_exposures": int((n_exposures > 6).sum()),
        "exposures_beyond_6": int(np.maximum(n_exposures - 6, 0).sum()),
        "max_exposures_per_request": int(n_exposures.max(initial=0)),
        "max_candidates_per_request": int(stage_count.sum(axis=1).max(initial=0)),
        "unflagged_rows": int((stage == _UNFLAGGED).sum()),
        "multi_flag_rows": int(((flags & (flags - 1)) != 0).sum()),  # more than one bit set
        "stage_rows": {name: int(n) for name, n in zip(STORE_STAGES, stage_count.sum(axis=0), strict=True)},
        "corpus": len(corpus),
        "corpus_source": corpus_source,
        **seq_stats,
    }
    with clock("write"):
        _write_tables(partition, tables)
    # Free the day before the UBM dict, the largest input.
    del tables, candidates, exposures, stage_rows, exposure_rows, sequences, stage, flags, index
    if files.ubm_seq_request_id_dict.is_file():
        with clock("ubm"):
            ubm, ubm_stats, observed = _read_ubm(files.ubm_seq_request_id_dict)
            _write_tables(partition, {"ubm": ubm})
        stats.update(ubm_stats)
        for name, value in observed.items():
            acc.observed_max[name] = max(acc.observed_max.get(name, -1), value)
    else:
        logger.warning("%s: absent; the day has no UBM table", files.ubm_seq_request_id_dict)
    stats["phase_seconds"] = clock.seconds
    return stats


def _write_tables(partition: Path, tables: Mapping[str, pa.Table]) -> None:
    """Write a day's tables side by side (pyarrow releases the GIL while encoding)."""
    partition.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=min(len(tables), os.cpu_count() or 1)) as pool:
        futures = [
            pool.submit(pq.write_table, table, partition / f"{name}.parquet", **PARQUET_OPTIONS)
            for name, table in tables.items()
        ]
        for future in futures:
            future.result()


def _id_cnt(layout: ReleaseLayout) -> dict[str, int]:
    """``others/id_cnt.pkl`` with canonical keys (``photo_id`` accepted for ``video_id``); {} if absent."""
    if not layout.id_cnt.is_file():
        logger.warning("%s: absent; feature sizes come from the ids observed in the data", layout.id_cnt)
        return {}
    raw = load_pickle(layout.id_cnt)
    if not isinstance(raw, dict):
        raise RecFlowFormatError(f"{layout.id_cnt}: expected a dict feature name -> cardinality, got {type(raw)}")
    out: dict[str, int] = {}
    for feature in ID_CNT_FEATURES:
        for spelling in ID_CNT_ALIASES.get(feature, (feature,)):
            if spelling in raw:
                try:
                    out[feature] = int(raw[spelling])
                except (TypeError, ValueError) as error:
                    raise RecFlowFormatError(
                        f"{layout.id_cnt}: key {spelling!r} has value {raw[spelling]!r}; expected an integer count"
                    ) from error
                break
    return out


def _feature_sizes(id_cnt: Mapping[str, int], acc: _Accumulator) -> dict[str, int]:
    """Embedding-table sizes: count + 2 (index 0 is padding after the +1 shift; count + 1 stays valid)."""
    sizes: dict[str, int] = {}
    for feature in ID_CNT_FEATURES:
        count = max(id_cnt.get(feature, 0), acc.observed_max.get(feature, -1) + 1)
        if feature in id_cnt and acc.observed_max.get(feature, -1) >= id_cnt[feature]:
            logger.warning(
                "id_cnt[%r] = %d but ids up to %d occur; sizing the table from the data",
                feature,
                id_cnt[feature],
                acc.observed_max[feature],
            )
        sizes[feature] = count + 2
    for name, count in TIME_CARDINALITY.items():
        sizes[name] = count + 2
    return sizes


def _import_tests(layout: ReleaseLayout, dst: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in TEST_FILES:
        path = layout.test_file(name)
        if path is None:
            continue
        names = feather_column_names(path)
        wanted = ["request_id", "video_id", "effective_view", *(c for c in TEST_COLUMNS if c in names)]
        columns = read_feather_columns(path, list(dict.fromkeys(wanted)))
        target = dst / OTHERS_DIR / f"{name}.parquet"
        temporary = target.with_name(f".{target.name}.partial-{os.getpid()}")
        pq.write_table(pa.table(columns), temporary, **PARQUET_OPTIONS)
        temporary.replace(target)
        per_request = np.unique(columns["request_id"], return_counts=True)[1]
        out[name] = {
            "source": path.name,
            "rows": len(columns["request_id"]),
            "requests": len(per_request),
            "max_rows_per_request": int(per_request.max(initial=0)),
            "flag_rows": {s: int(columns[s].sum()) for s in STAGES if s in columns},
        }
    return out


def _write_json_atomically(path: Path, payload: Mapping[str, Any]) -> None:
    temporary = path.with_name(f".{path.name}.partial-{os.getpid()}")
    temporary.write_text(json.dumps(payload, indent=2, sort_keys=False))
    temporary.replace(path)


def _prepare_destination(dst: Path, overwrite: bool) -> None:
    if dst.exists() and any(dst.iterdir()):
        if (dst / MANIFEST).exists() and not overwrite:
            raise FileExistsError(f"{dst} already holds a RecFlow store; pass overwrite=True to replace it")
        unknown = [p.name for p in dst.iterdir() if p.name not in (MANIFEST, DAYS_DIR, OTHERS_DIR)]
        if unknown and not overwrite:
            raise FileExistsError(f"{dst} is not empty ({unknown[:5]}); pass overwrite=True to replace it")
        if overwrite:
            shutil.rmtree(dst)
    (dst / DAYS_DIR).mkdir(parents=True, exist_ok=True)
    (dst / OTHERS_DIR).mkdir(parents=True, exist_ok=True)
    (dst / MANIFEST).unlink(missing_ok=True)  # the store is incomplete until the new manifest is written
    for leftover in (dst / DAYS_DIR).glob(".*.partial-*"):
        shutil.rmtree(leftover, ignore_errors=True)


def _commit_partition(temporary: Path, final: Path) -> None:
    """Move a complete partition into place (an older partition of that day is replaced)."""
    if final.exists():
        trash = final.with_name(f".{final.name}.old-{os.getpid()}")
        final.rename(trash)
        temporary.rename(final)
        shutil.rmtree(trash)
    else:
        temporary.rename(final)


def import_recflow(
    *,
    src: str,
    dst: str,
    test_day: str | None = None,
    days: list[str] | None = None,
    on_missing_day: Literal["error", "skip"] = "error",
    overwrite: bool = False,
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

    Returns:
        The manifest.

    Raises:
        RecFlowFormatError: A file is truncated or corrupt, or lacks a column or has a wrong dtype (the message
            names the file and the column); :class:`~stcrank.data.recflow.errors.MissingDayError` for a missing day.
        UnsafePickleError: A pickle names a global other than containers, numpy arrays and scalars.
    """
    started = time.perf_counter()
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
    _prepare_destination(root, overwrite)
    id_cnt = _id_cnt(layout)
    acc = _Accumulator()
    rows: dict[str, Any] = {}
    for date in chosen:
        day_started = time.perf_counter()
        final = root / DAYS_DIR / date
        temporary = root / DAYS_DIR / f".{date}.partial-{os.getpid()}"
        try:
            rows[date] = _import_day(layout.day(date), temporary, acc)
        except BaseException:
            shutil.rmtree(temporary, ignore_errors=True)
            raise
        _commit_partition(temporary, final)
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
        "stages": list(STORE_STAGES),
        "stage_priority": dict(STAGE_PRIORITY),
        "feature_sizes": _feature_sizes(id_cnt, acc),
        "id_cnt": id_cnt,
        "observed_max_id": acc.observed_max,
        "official_tests": _import_tests(layout, root),
        "rows": rows,
        "totals": totals,
        "seconds": round(time.perf_counter() - started, 3),
    }
    _write_json_atomically(root / MANIFEST, manifest)
    return manifest
