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
complete. ``all_stage`` is streamed in chunks of ``chunk_rows`` rows (a request straddling two chunks is carried
over whole) and written as Parquet row groups, so memory is bounded by the chunk plus per-request and
per-exposure arrays (``docs/data_formats.md`` lists them); a day whose rows are not grouped by increasing request
id is read whole. Pickles are streamed through the restricted unpickler (the sequence dict a chunk of requests at
a time), and nothing goes through pandas.

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
from concurrent.futures import Future, ThreadPoolExecutor
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
    iter_feather_columns,
    read_feather_columns,
)
from stcrank.data.recflow.pickles import iter_dict_pickle, load_pickle
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
from stcrank.errors import ConfigError

logger = logging.getLogger(__name__)

PARQUET_OPTIONS: dict[str, Any] = {"compression": "lz4", "use_dictionary": False, "write_statistics": False}
"""How store tables are written: fast to write and to read back (high-cardinality integer columns)."""

_UNFLAGGED = STAGE_CODE["unflagged"]
SEQ_BATCH_ITEMS = 1024
"""``seq_effective_50_dict`` items stacked at a time (4 MB of sequences)."""
UbmSource = Literal["pickle", "all_stage", "none"]
"""Where a day's ``ubm`` table comes from: the UBM pickle, the imported stage rows of past requests, or nowhere."""
DEFAULT_CHUNK_ROWS = 2_000_000
"""Default ``all_stage`` rows per chunk of a streamed import."""
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


def _stack_sequences(path: Path, items: list[tuple[Any, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """Request ids and ``[n, 50, 10]`` int64 sequences of a batch of ``seq_effective_50_dict`` items (checked)."""
    width = len(SEQ_ARRAY_COLUMNS)
    if not items:
        return np.zeros(0, np.int64), np.zeros((0, SEQ_LEN, width), np.int64)
    try:
        keys = np.fromiter((key for key, _ in items), dtype=np.int64, count=len(items))
    except (TypeError, ValueError, OverflowError) as error:
        raise RecFlowFormatError(f"{path}: a key is not an integer request id ({error}); expected int keys") from error
    try:
        stacked = np.stack([value for _, value in items])
    except (ValueError, TypeError) as error:
        shapes = {np.shape(value) for _, value in items}
        raise RecFlowFormatError(
            f"{path}: sequences have shapes {sorted(shapes)[:5]}; expected ({SEQ_LEN}, {width})"
        ) from error
    if stacked.shape[1:] != (SEQ_LEN, width) or stacked.dtype.kind not in "iu":
        raise RecFlowFormatError(
            f"{path}: sequences have shape {stacked.shape[1:]} and dtype {stacked.dtype}; expected integer arrays "
            f"of shape ({SEQ_LEN}, {width})"
        )
    return keys, stacked.astype(np.int64, copy=False)


def _last_of_each_key(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct keys and, for each, the position of its last occurrence (a dict keeps the later value)."""
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    last = np.r_[ordered[1:] != ordered[:-1], True] if len(ordered) else np.zeros(0, dtype=bool)
    return ordered[last], order[last]


def _read_sequences(path: Path, ids: np.ndarray, acc: _Accumulator) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """The day's ``seq_effective_50_dict`` as one ``[R, 50]`` array per column, aligned with the request ids."""
    parts = [_stack_sequences(path, items) for items in iter_dict_pickle(path, batch_items=SEQ_BATCH_ITEMS)]
    keys = np.concatenate([k for k, _ in parts]) if parts else np.zeros(0, np.int64)
    stacked = np.concatenate([v for _, v in parts]) if parts else np.zeros((0, SEQ_LEN, len(SEQ_ARRAY_COLUMNS)))
    del parts
    keys, rows = _last_of_each_key(keys)
    position = np.minimum(np.searchsorted(keys, ids), max(len(keys) - 1, 0))
    found = (keys[position] == ids) if len(keys) else np.zeros(len(ids), dtype=bool)
    seq = np.zeros((len(ids), SEQ_LEN, len(SEQ_ARRAY_COLUMNS)), dtype=np.int64)
    seq[found] = stacked[rows[position[found]]]
    del stacked
    stats = {
        "requests_without_sequence": int((~found).sum()),
        "sequences_without_request": int(len(keys) - found.sum()),
    }
    return _sequence_columns(seq, path, acc), stats


def _ubm_batch(path: Path, items: list[tuple[Any, Any]]) -> tuple[np.ndarray, np.ndarray, np.ndarray, set[str], int]:
    """Request ids, stage codes and ``(n, 8)`` rows of a batch of UBM items; unknown stage keys (and count) dropped."""
    request_ids: list[int] = []
    codes: list[int] = []
    arrays: list[np.ndarray] = []
    unknown: set[str] = set()
    n_unknown = 0
    try:  # per-request Python is unavoidable here: the pickle is a dict of dicts
        for request_id, stages in items:
            for stage, array in stages.items():
                code = STAGE_CODE.get(stage, -1)
                if code < 0 or code == _UNFLAGGED:
                    unknown.add(str(stage))
                    n_unknown += 1
                    continue
                request_ids.append(request_id)
                codes.append(code)
                arrays.append(array)
    except AttributeError as error:
        raise RecFlowFormatError(f"{path}: a value is not a dict stage -> array ({error}); expected dicts") from error
    width = len(STAGE_ARRAY_COLUMNS)
    try:
        counts = np.fromiter(map(len, arrays), dtype=np.int64, count=len(arrays))
        matrix = np.concatenate(arrays) if arrays else np.zeros((0, width), np.int64)
    except (TypeError, ValueError) as error:
        shapes = sorted({str(np.shape(array)) for array in arrays})[:5]
        raise RecFlowFormatError(f"{path}: stage arrays have shapes {shapes}; expected (n, {width})") from error
    if matrix.ndim != 2 or matrix.shape[1] != width or matrix.dtype.kind not in "iu":
        raise RecFlowFormatError(
            f"{path}: stage arrays have shape (n, {matrix.shape[1:]}) and dtype {matrix.dtype}; expected integer "
            f"arrays (n, {width}) with columns {list(STAGE_ARRAY_COLUMNS)}"
        )
    rid = np.repeat(np.asarray(request_ids, dtype=np.int64), counts)
    return rid, np.repeat(np.asarray(codes, dtype=np.int8), counts), matrix, unknown, n_unknown


def _ubm_columns(path: Path, matrix: np.ndarray, observed: dict[str, int]) -> dict[str, np.ndarray]:
    """The 8 stage-array columns of ``(n, 8)`` UBM rows, checked and narrowed (``observed`` gets the largest ids)."""
    columns: dict[str, np.ndarray] = {}
    for j, name in enumerate(STAGE_ARRAY_COLUMNS):
        values = matrix[:, j]
        if name in ITEM_ID_COLUMNS:
            values = _check_ids(values, path, f"column {j} ({name})")
            if len(values):
                observed[name] = max(observed.get(name, -1), int(values.max()))
        elif name == "effective_view":
            values = values.astype(np.int8)
        elif name != "upload_timestamp":
            values = _narrow(values, np.int32, path, f"column {j} ({name})")
        columns[name] = np.ascontiguousarray(values)
    return columns


def _read_ubm(path: Path) -> tuple[pa.Table, dict[str, int], dict[str, int]]:
    """The day's ``ubm_seq_request_id_dict`` as rows (request_id, stage, the 8 stage-array columns).

    The pickle is streamed (:func:`~stcrank.data.recflow.pickles.iter_dict_pickle`) and each batch of requests is
    turned into checked, narrowed columns at once, so the dict of arrays never exists whole.

    Returns:
        The table, its row counts, and the largest id of each item feature (thread-safe: mutates nothing).
    """
    parts: dict[str, list[np.ndarray]] = {name: [] for name in ("request_id", "stage", *STAGE_ARRAY_COLUMNS)}
    unknown: set[str] = set()
    observed: dict[str, int] = {}
    n_requests = n_unknown = 0
    for items in iter_dict_pickle(path, batch_items=SEQ_BATCH_ITEMS):
        rid, stage, matrix, batch_unknown, batch_n_unknown = _ubm_batch(path, items)
        n_requests += len(items)
        n_unknown += batch_n_unknown
        unknown |= batch_unknown
        del items
        parts["request_id"].append(rid)
        parts["stage"].append(stage)
        for name, values in _ubm_columns(path, matrix, observed).items():
            parts[name].append(values)
    if unknown:
        logger.warning("%s: ignored unknown stage keys %s", path, sorted(unknown))
    empty = _ubm_columns(path, np.zeros((0, len(STAGE_ARRAY_COLUMNS)), np.int64), {})
    empty.update(request_id=np.zeros(0, np.int64), stage=np.zeros(0, np.int8))
    columns: dict[str, np.ndarray] = {}
    for name in parts:  # one column at a time: the parts of the others are not copied meanwhile
        columns[name] = np.concatenate(parts[name]) if parts[name] else empty[name]
        parts[name] = []
    key = columns["request_id"] * N_STAGES + columns["stage"]
    if np.any(key[1:] < key[:-1]):
        order = np.argsort(key, kind="stable")
        columns = {name: values[order] for name, values in columns.items()}
    del key
    stats = {"ubm_requests": n_requests, "ubm_rows": len(columns["request_id"]), "ubm_unknown_stage_keys": n_unknown}
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


def _import_day(
    files: DayFiles, partition: Path, acc: _Accumulator, ubm: UbmSource = "pickle", store_root: Path | None = None
) -> dict[str, Any]:
    """Convert one whole day into a partition directory; returns the day's row counts and phase timings.

    Used when the rows of ``all_stage`` are not grouped by increasing request id (or ``chunk_rows`` is None):
    memory then grows with the day.
    """
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
        seq_stats["chunk_rows"] = None
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
    referenced = np.unique(sequences["seq_request_id"][sequences["seq_time_ms"] > 0]) if ubm == "all_stage" else None
    # Free the day before the UBM dict, the largest input.
    del tables, candidates, exposures, stage_rows, exposure_rows, sequences, stage, flags, index
    _import_ubm(files, partition, acc, ubm, referenced, store_root, clock, stats)
    stats["phase_seconds"] = clock.seconds
    return stats


class _UnsortedError(Exception):
    """The rows of ``all_stage`` are not grouped by request in increasing request id order (streaming needs it)."""


class _UnorderedSequencesError(Exception):
    """A key of ``seq_effective_50_dict`` arrived after the chunk of its request was written (keys out of order)."""


class _SequenceSource:
    """A day's ``seq_effective_50_dict`` streamed, looked up a chunk of requests (increasing ids) at a time.

    The pickle is read batch by batch (:func:`~stcrank.data.recflow.pickles.iter_dict_pickle`) only as far as the
    chunk's largest request id, so memory is bounded by the chunk when the keys come in increasing request id, as
    the release and the generator write them. A key that arrives after its chunk was written raises
    :class:`_UnorderedSequencesError`; the day is then imported again with :class:`_SpilledSequences`.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.width = len(SEQ_ARRAY_COLUMNS)
        self.batches = iter_dict_pickle(path, batch_items=SEQ_BATCH_ITEMS)
        self.parts: list[tuple[np.ndarray, np.ndarray]] = []  # pulled, not yet looked up (all keys > served)
        self.max_key = np.iinfo(np.int64).min  # largest key pulled so far
        self.ordered = True  # the parts' keys are increasing, within and across parts
        self.served = np.iinfo(np.int64).min  # largest request id looked up so far
        self.found = 0
        self.unmatched = 0

    def _pull(self) -> bool:
        """Read the next batch into ``parts``; False at the end of the file."""
        items = next(self.batches, None)
        if items is None:
            return False
        keys, values = _stack_sequences(self.path, items)
        del items
        if len(keys):
            if int(keys.min()) <= self.served:
                raise _UnorderedSequencesError
            if not self.parts:
                self.ordered = True
            self.ordered = self.ordered and int(keys[0]) > self.max_key and bool(np.all(keys[1:] > keys[:-1]))
            self.parts.append((keys, values))
            self.max_key = max(self.max_key, int(keys.max()))
        return True

    def _pending(self) -> tuple[np.ndarray, np.ndarray]:
        """The pulled, not yet looked up sequences: sorted distinct keys (the later value of a key wins)."""
        keys = np.concatenate([k for k, _ in self.parts]) if self.parts else np.zeros(0, np.int64)
        values = np.concatenate([v for _, v in self.parts]) if self.parts else np.zeros((0, SEQ_LEN, self.width))
        self.parts = []
        if np.any(keys[1:] <= keys[:-1]):
            keys, rows = _last_of_each_key(keys)
            values = values[rows]
        return keys, values.astype(np.int64, copy=False)

    def take(self, ids: np.ndarray, acc: _Accumulator) -> dict[str, np.ndarray]:
        """The sequence columns ``[len(ids), 50]`` of requests ``ids`` (zeros where a request has none)."""
        seq = np.zeros((len(ids), SEQ_LEN, self.width), dtype=np.int64)
        if len(ids):
            upper = int(ids[-1])
            while self.max_key <= upper and self._pull():
                pass
            if self.ordered:  # the usual case: look up part by part, without concatenating them
                rest: list[tuple[np.ndarray, np.ndarray]] = []
                for keys, values in self.parts:
                    done = int(np.searchsorted(keys, upper, side="right"))
                    if done:
                        position = np.minimum(np.searchsorted(keys[:done], ids), done - 1)
                        found = keys[position] == ids
                        seq[found] = values[position[found]]
                        self.found += int(found.sum())
                        self.unmatched += done - int(found.sum())
                    if done < len(keys):
                        rest.append((keys[done:], values[done:]))
                self.parts = rest
                self.served = upper
                return _sequence_columns(seq, self.path, acc)
            keys, values = self._pending()
            done = int(np.searchsorted(keys, upper, side="right"))
            position = np.minimum(np.searchsorted(keys[:done], ids), max(done - 1, 0))
            found = (keys[position] == ids) if done else np.zeros(len(ids), dtype=bool)
            seq[found] = values[position[found]]
            self.found += int(found.sum())
            self.unmatched += done - int(found.sum())
            if done < len(keys):
                self.parts.append((keys[done:], values[done:]))
            self.served = upper
        return _sequence_columns(seq, self.path, acc)

    def stats(self, n_requests: int) -> dict[str, int]:
        """Requests without a sequence, and sequences of no request (the rest of the file is read and checked)."""
        leftover = [self._pending()[0]]
        while self._pull():  # only the keys are kept: the values are checked, then dropped
            leftover.append(self._pending()[0])
        self.unmatched += len(np.unique(np.concatenate(leftover)))
        return {"requests_without_sequence": n_requests - self.found, "sequences_without_request": self.unmatched}

    def close(self) -> None:
        """Stop reading the pickle."""
        self.batches.close()


class _SpilledSequences(_SequenceSource):
    """``seq_effective_50_dict`` whose keys are not in request id order: spilled to a raw file, read back by id.

    The sequences are written in file order to ``spill_dir/sequences.bin`` (4000 bytes each) with only their keys
    kept in memory (8 bytes a request); each chunk then reads its requests' records through a memory map, so
    memory stays bounded by the chunk.
    """

    def __init__(self, path: Path, spill_dir: Path) -> None:
        self.path = path
        self.width = len(SEQ_ARRAY_COLUMNS)
        spill_dir.mkdir(parents=True, exist_ok=True)
        self.spill = spill_dir / "sequences.bin"
        keys: list[np.ndarray] = []
        with self.spill.open("wb") as file:
            for items in iter_dict_pickle(path, batch_items=SEQ_BATCH_ITEMS):
                batch_keys, values = _stack_sequences(path, items)
                del items
                keys.append(batch_keys)
                file.write(np.ascontiguousarray(values).tobytes())
        self.records = sum(map(len, keys))
        self.keys, self.rows = _last_of_each_key(np.concatenate(keys) if keys else np.zeros(0, np.int64))
        self.found = 0

    def take(self, ids: np.ndarray, acc: _Accumulator) -> dict[str, np.ndarray]:
        """The sequence columns ``[len(ids), 50]`` of requests ``ids`` (zeros where a request has none)."""
        seq = np.zeros((len(ids), SEQ_LEN, self.width), dtype=np.int64)
        if len(ids) and len(self.keys):
            position = np.minimum(np.searchsorted(self.keys, ids), len(self.keys) - 1)
            found = self.keys[position] == ids
            rows = self.rows[position[found]]
            if len(rows):
                spilled = np.memmap(self.spill, dtype=np.int64, mode="r", shape=(self.records, SEQ_LEN, self.width))
                seq[found] = spilled[rows]
                del spilled
            self.found += int(found.sum())
        return _sequence_columns(seq, self.path, acc)

    def stats(self, n_requests: int) -> dict[str, int]:
        """Requests without a sequence, and sequences of no request."""
        return {
            "requests_without_sequence": n_requests - self.found,
            "sequences_without_request": len(self.keys) - self.found,
        }

    def close(self) -> None:
        """Remove the spill file."""
        shutil.rmtree(self.spill.parent, ignore_errors=True)


def _sequence_columns(seq: np.ndarray, path: Path, acc: _Accumulator) -> dict[str, np.ndarray]:
    """Split ``[R, 50, 10]`` sequences into the store's per-column ``[R, 50]`` arrays (checked, narrowed)."""
    valid = seq[:, :, SEQ_ARRAY_COLUMNS.index("time_ms")] > 0
    out: dict[str, np.ndarray] = {}
    for j, name in enumerate(SEQ_ARRAY_COLUMNS):
        values = seq[:, :, j]
        if name in ITEM_ID_COLUMNS:
            values = _check_ids(values, path, f"column {j} ({name})")
            acc.observe(name, values[valid])
        elif name not in ("time_ms", "request_id", "upload_timestamp"):
            values = _narrow(values, np.int32, path, f"column {j} ({name})")
        out[f"seq_{name}"] = np.ascontiguousarray(values)
    return out


class _DayStats:
    """Row counts of a day, summed over its chunks."""

    def __init__(self) -> None:
        self.n = dict.fromkeys(("all_stage", "requests", "unflagged_rows", "multi_flag_rows"), 0)
        self.stage_rows = np.zeros(N_STAGES, dtype=np.int64)
        self.max_candidates = 0

    def add(self, candidates: Mapping[str, np.ndarray], stage_count: np.ndarray) -> None:
        flags = candidates["flags"]
        self.n["all_stage"] += len(flags)
        self.n["requests"] += len(stage_count)
        self.n["unflagged_rows"] += int((candidates["stage"] == _UNFLAGGED).sum())
        self.n["multi_flag_rows"] += int(((flags & (flags - 1)) != 0).sum())
        self.stage_rows += stage_count.sum(axis=0)
        self.max_candidates = max(self.max_candidates, int(stage_count.sum(axis=1).max(initial=0)))


class _ChunkWriter:
    """Parquet files of a partition written row group by row group (one schema, fixed by the first chunk).

    Writes run on one background thread, in order, so that encoding chunk ``i`` (pyarrow releases the GIL)
    overlaps reading and converting chunk ``i + 1``; at most ``backlog`` writes wait, which bounds the memory held
    by tables not yet written.
    """

    def __init__(self, partition: Path, backlog: int = 2) -> None:
        partition.mkdir(parents=True, exist_ok=True)
        self.partition = partition
        self.writers: dict[str, pq.ParquetWriter] = {}
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="parquet-writer")
        self.pending: list[Future[None]] = []
        self.backlog = backlog

    def _write(self, name: str, table: pa.Table) -> None:
        if name not in self.writers:
            self.writers[name] = pq.ParquetWriter(self.partition / f"{name}.parquet", table.schema, **PARQUET_OPTIONS)
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
            for writer in self.writers.values():
                writer.close()


def _import_day_chunked(
    files: DayFiles,
    partition: Path,
    acc: _Accumulator,
    chunk_rows: int,
    ubm: UbmSource,
    store_root: Path,
    spill: bool = False,
) -> dict[str, Any]:
    """Convert one day chunk by chunk: ``all_stage`` is streamed, memory is bounded by ``chunk_rows`` rows.

    A request whose rows straddle two chunks is carried over whole into the next chunk. Raises :class:`_UnsortedError`
    (before anything is complete) when the rows are not grouped by increasing request id; the caller then falls
    back to :func:`_import_day`. Raises :class:`_UnorderedSequencesError` when the keys of ``seq_effective_50_dict``
    are not in request id order and ``spill`` is False; the caller then imports the day again with ``spill``.
    """
    clock = _Clock()
    with clock("read_feather"):
        exposure_rows = read_feather_columns(files.realshow, ROW_KINDS)  # exposures: ~2% of the stage rows
    exp_id = exposure_rows["request_id"]
    with clock("sequences"):
        sequences = (
            _SpilledSequences(files.seq_effective_50_dict, partition / ".sequences")
            if spill
            else _SequenceSource(files.seq_effective_50_dict)
        )
    writer = _ChunkWriter(partition)
    stats = _DayStats()
    ids_parts: list[np.ndarray] = []
    referenced = np.zeros(0, dtype=np.int64)
    last = np.iinfo(np.int64).min

    def flush(rows: dict[str, np.ndarray], upper: int) -> None:
        """Write the requests of ``rows`` (complete) and the realshow-only requests up to id ``upper``."""
        nonlocal last, referenced
        with clock("index"):
            starts, run_ids, run_len = _group_rows(rows["request_id"])
            if len(run_ids) and (run_ids[0] <= last or np.any(run_ids[1:] <= run_ids[:-1])):
                raise _UnsortedError
            in_range = (exp_id > last) & (exp_id <= upper)
            exposure_part = {name: values[in_range] for name, values in exposure_rows.items()}
            exp_starts, exp_run_ids, exp_run_len = _group_rows(exposure_part["request_id"])
            ids = np.union1d(run_ids, exp_run_ids)
            run_rows, exp_run_rows = np.searchsorted(ids, run_ids), np.searchsorted(ids, exp_run_ids)
            columns = _fill_requests(
                ids,
                [
                    (files.realshow, exposure_part, exp_starts, exp_run_rows),
                    (files.all_stage, rows, starts, run_rows),
                ],
            )
            index = _RequestIndex(ids, np.repeat(run_rows, run_len), np.zeros(0, np.int32), columns)
            candidates, stage_count = _candidates(rows, index, acc)
            n_exposures = np.bincount(np.repeat(exp_run_rows, exp_run_len), minlength=len(ids))
        with clock("sequences"):
            seq = sequences.take(ids, acc)
            if ubm == "all_stage":
                referenced = np.union1d(referenced, seq["seq_request_id"][seq["seq_time_ms"] > 0])
        with clock("write"):
            writer.write("requests", _requests_table(index, n_exposures, seq, stage_count, acc))
            writer.write("candidates", pa.table(candidates))
        stats.add(candidates, stage_count)
        ids_parts.append(ids)
        if len(ids):
            last = int(ids[-1])

    carry: dict[str, np.ndarray] | None = None
    try:
        with clock("read_feather"):
            chunks = iter_feather_columns(files.all_stage, ROW_KINDS, chunk_rows)
            chunk = next(chunks)
        while chunk is not None:
            if carry is not None:
                chunk = {name: np.concatenate([carry[name], chunk[name]]) for name in chunk}
            with clock("read_feather"):
                upcoming = next(chunks, None)
            if upcoming is None:
                flush(chunk, np.iinfo(np.int64).max)
                carry = None
            else:
                rid = chunk["request_id"]
                tail = int(np.flatnonzero(np.r_[True, rid[1:] != rid[:-1]])[-1]) if len(rid) else 0
                carry = {name: values[tail:] for name, values in chunk.items()}
                if tail:
                    flush({name: values[:tail] for name, values in chunk.items()}, int(rid[tail]) - 1)
            chunk = upcoming
        with clock("sequences"):
            seq_stats = sequences.stats(sum(map(len, ids_parts)))
    finally:
        with clock("write"):
            writer.close()
        sequences.close()
    ids = np.concatenate(ids_parts)
    with clock("index"):
        exposures = {
            "request_row": np.searchsorted(ids, exp_id).astype(np.int32),
            "request_id": exp_id,
            **_item_columns(exposure_rows, acc),
        }
        n_exposures = np.bincount(exposures["request_row"], minlength=len(ids))
    with clock("sequences"):
        corpus, corpus_source = _read_corpus(files, np.unique(exposures["video_id"]).astype(np.int64), acc)
    with clock("write"):
        _write_tables(partition, {"exposures": pa.table(exposures), "corpus": pa.table({"video_id": corpus})})
    result: dict[str, Any] = {
        "all_stage": stats.n["all_stage"],
        "requests": len(ids),
        "candidates": stats.n["all_stage"],
        "exposures": len(exp_id),
        "requests_over_6_exposures": int((n_exposures > 6).sum()),
        "exposures_beyond_6": int(np.maximum(n_exposures - 6, 0).sum()),
        "max_exposures_per_request": int(n_exposures.max(initial=0)),
        "max_candidates_per_request": stats.max_candidates,
        "unflagged_rows": stats.n["unflagged_rows"],
        "multi_flag_rows": stats.n["multi_flag_rows"],
        "stage_rows": {name: int(n) for name, n in zip(STORE_STAGES, stats.stage_rows, strict=True)},
        "corpus": len(corpus),
        "corpus_source": corpus_source,
        **seq_stats,
        "chunk_rows": chunk_rows,
    }
    exposure_rows.clear()  # free the inputs before the UBM table
    del exposures
    _import_ubm(files, partition, acc, ubm, referenced, store_root, clock, result)
    result["phase_seconds"] = clock.seconds
    return result


def _import_ubm(
    files: DayFiles,
    partition: Path,
    acc: _Accumulator,
    ubm: UbmSource,
    referenced: np.ndarray | None,
    store_root: Path | None,
    clock: _Clock,
    stats: dict[str, Any],
) -> None:
    """Write the day's ``ubm`` table from the UBM pickle, or derive it from the imported stage rows, or not."""
    stats["ubm_source"] = ubm
    if ubm == "none":
        return
    if ubm == "all_stage":
        with clock("ubm"):
            table, ubm_stats, observed = derive_ubm(
                referenced, _partitions_before(store_root or partition.parent.parent, partition)
            )
            _write_tables(partition, {"ubm": table})
    elif files.ubm_seq_request_id_dict.is_file():
        with clock("ubm"):
            table, ubm_stats, observed = _read_ubm(files.ubm_seq_request_id_dict)
            _write_tables(partition, {"ubm": table})
    else:
        logger.warning("%s: absent; the day has no UBM table", files.ubm_seq_request_id_dict)
        return
    stats.update(ubm_stats)
    for name, value in observed.items():
        acc.observed_max[name] = max(acc.observed_max.get(name, -1), value)


def _partitions_before(store_root: Path, partition: Path) -> list[Path]:
    """The complete day partitions of the store so far, then the day being written."""
    days = sorted(p for p in (store_root / DAYS_DIR).iterdir() if p.is_dir() and not p.name.startswith("."))
    return [*days, partition]


UBM_STAGES: tuple[str, ...] = ("rank_pos",)
"""Stages a derived ``ubm`` table keeps (the competing items of RecFlow's UBM experiments are ``rank_pos``)."""


def derive_ubm(
    referenced: np.ndarray, partitions: list[Path], stages: tuple[str, ...] = UBM_STAGES
) -> tuple[pa.Table, dict[str, int], dict[str, int]]:
    """The ``ubm`` table of past requests ``referenced``, read from the stage rows of imported day partitions.

    ``ubm_seq_request_id_dict`` holds, for every past request a behaviour sequence references, the same stage rows
    as that request's rows of ``all_stage``, so the rows of ``stages`` can be read back from the partitions that
    hold those requests instead of unpickling the dict. Requests outside the partitions (days before the first
    imported one) get no rows. Only the row groups holding a referenced request are read.

    Args:
        referenced: Past request ids (sorted, unique).
        partitions: Day partition directories (``requests.parquet`` and ``candidates.parquet``).
        stages: Stage names to keep.

    Returns:
        The table (columns as the pickle-based one), its row counts, and the largest id of each item feature.
    """
    codes = np.array([STAGE_CODE[s] for s in stages], dtype=np.int8)
    names = ["stage", *STAGE_ARRAY_COLUMNS]
    parts: list[dict[str, np.ndarray]] = []
    found = 0
    for partition in partitions:
        requests = pq.read_table(partition / "requests.parquet", columns=["request_id", "stage_count"])
        rid = requests.column("request_id").to_numpy()
        if not len(rid) or not len(referenced) or referenced[-1] < rid[0] or referenced[0] > rid[-1]:
            continue
        counts = requests.column("stage_count").combine_chunks().flatten().to_numpy().reshape(len(rid), N_STAGES)
        wanted = np.isin(rid, referenced)
        found += int(wanted.sum())
        ends = np.cumsum(counts.sum(axis=1))
        file = pq.ParquetFile(partition / "candidates.parquet")
        start = 0
        for group in range(file.num_row_groups):
            size = file.metadata.row_group(group).num_rows
            # request row of each candidate row of the group (no array over the whole day)
            owners = np.searchsorted(ends, np.arange(start, start + size), side="right")
            start += size
            if not size or not wanted[owners].any():
                continue
            data = file.read_row_group(group, columns=names)
            stage = data.column("stage").to_numpy()
            keep = wanted[owners] & np.isin(stage, codes)
            part = {"request_id": rid[owners[keep]]}
            part.update({name: data.column(name).to_numpy()[keep] for name in names})
            parts.append(part)
    columns = {
        name: np.concatenate([p[name] for p in parts]) if parts else np.zeros(0, np.int64)
        for name in ["request_id", *names]
    }
    key = columns["request_id"] * N_STAGES + columns["stage"]
    if len(key) and np.any(key[1:] < key[:-1]):
        order = np.argsort(key, kind="stable")
        columns = {name: values[order] for name, values in columns.items()}
    observed = {n: int(columns[n].max()) for n in ITEM_ID_COLUMNS if len(columns[n])}
    stats = {"ubm_requests": found, "ubm_rows": len(columns["request_id"]), "ubm_unknown_stage_keys": 0}
    return pa.table(columns), stats, observed


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


def _import_one(
    files: DayFiles, partition: Path, acc: _Accumulator, chunk_rows: int | None, ubm: UbmSource, root: Path
) -> dict[str, Any]:
    """Import a day streamed in chunks, or whole when ``chunk_rows`` is None or its rows are not sorted."""
    if chunk_rows is not None:
        try:
            try:
                return _import_day_chunked(files, partition, acc, chunk_rows, ubm, root)
            except _UnorderedSequencesError:
                logger.info(
                    "%s: keys not in increasing request id; spilling the sequences to disk and importing the day again",
                    files.seq_effective_50_dict,
                )
                shutil.rmtree(partition, ignore_errors=True)
                return _import_day_chunked(files, partition, acc, chunk_rows, ubm, root, spill=True)
        except _UnsortedError:
            logger.info("%s: rows not grouped by increasing request id; reading the day whole", files.all_stage)
            shutil.rmtree(partition, ignore_errors=True)
    return _import_day(files, partition, acc, ubm, root)


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


def _import_tests(layout: ReleaseLayout, dst: Path, chunk_rows: int | None = None) -> dict[str, Any]:
    """Copy the official test files' useful columns into ``others/``, chunk by chunk when ``chunk_rows`` is set."""
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
        temporary = target.with_name(f".{target.name}.partial-{os.getpid()}")
        n_rows = 0
        flags = dict.fromkeys((s for s in STAGES if s in wanted), 0)
        ids, counts = [], []
        writer: pq.ParquetWriter | None = None
        try:
            for columns in iter_feather_columns(path, wanted, chunk_rows):
                table = pa.table(columns)
                writer = writer or pq.ParquetWriter(temporary, table.schema, **PARQUET_OPTIONS)
                writer.write_table(table)
                n_rows += len(columns["request_id"])
                for stage in flags:
                    flags[stage] += int(columns[stage].sum())
                unique, count = np.unique(columns["request_id"], return_counts=True)
                ids.append(unique)
                counts.append(count)
        finally:
            if writer is not None:
                writer.close()
        temporary.replace(target)
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


def _write_json_atomically(path: Path, payload: Mapping[str, Any]) -> None:
    temporary = path.with_name(f".{path.name}.partial-{os.getpid()}")
    temporary.write_text(json.dumps(payload, indent=2, sort_keys=False))
    temporary.replace(path)


def _prepare_destination(dst: Path, overwrite: bool) -> None:
    if dst.exists() and any(dst.iterdir()):
        if (dst / MANIFEST).exists() and not overwrite:
            raise FileExistsError(f"{dst} already holds a RecFlow store; pass --overwrite true to replace it")
        unknown = [p.name for p in dst.iterdir() if p.name not in (MANIFEST, DAYS_DIR, OTHERS_DIR)]
        if unknown and not overwrite:
            raise FileExistsError(f"{dst} is not empty ({unknown[:5]}); pass --overwrite true to replace it")
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
        raise ConfigError(f"--chunk_rows {chunk_rows}: must be at least 1 (or null for whole files)")
    if ubm not in ("pickle", "all_stage", "none"):
        raise ConfigError(f"--ubm {ubm}: choose pickle, all_stage or none")
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
            raise MissingDayError(
                f"{layout.root}: day {date} is incomplete ({reason}); pass --on_missing_day skip to import the "
                "other days"
            )
        logger.warning("import-recflow: skipping %s (%s)", date, reason)
        skipped[date] = reason
    if not chosen:
        raise MissingDayError(f"{layout.root}: every requested day is incomplete: {skipped}")
    test_day = test_day or chosen[-1]
    if test_day not in chosen:
        raise ConfigError(f"--test_day {test_day}: not among the imported days {chosen[0]} .. {chosen[-1]}")

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
            rows[date] = _import_one(layout.day(date), temporary, acc, chunk_rows, ubm, root)
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
        "ubm_source": ubm,
        "stages": list(STORE_STAGES),
        "stage_priority": dict(STAGE_PRIORITY),
        "feature_sizes": _feature_sizes(id_cnt, acc),
        "id_cnt": id_cnt,
        "observed_max_id": acc.observed_max,
        "official_tests": _import_tests(layout, root, chunk_rows),
        "rows": rows,
        "totals": totals,
        "seconds": round(time.perf_counter() - started, 3),
    }
    _write_json_atomically(root / MANIFEST, manifest)
    return manifest
