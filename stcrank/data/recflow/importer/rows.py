"""The rows of ``all_stage`` and ``realshow`` as the store's request and candidate columns (checked, narrowed)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from stcrank.data.recflow.errors import RecFlowFormatError
from stcrank.data.recflow.importer.writing import store_table
from stcrank.data.recflow.official import DayFiles
from stcrank.data.recflow.schema import (
    FEEDBACK_COLUMNS,
    ITEM_ID_COLUMNS,
    N_STAGES,
    SEQ_STORE_COLUMNS,
    STAGE_CODE,
    STAGES,
    TIME_CODES,
    USER_COLUMNS,
)
from stcrank.data.recflow.time_features import time_codes

logger = logging.getLogger(__name__)

UNFLAGGED = STAGE_CODE["unflagged"]
"""Stage code of a row with no flag."""


@dataclass
class Accumulator:
    """What the import learns across days (written to the manifest)."""

    observed_max: dict[str, int] = field(default_factory=dict)
    corpus: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def observe(self, name: str, values: np.ndarray) -> None:
        """Record the largest value of ``values`` for feature ``name``."""
        if len(values):
            self.observe_max(name, int(values.max()))

    def observe_max(self, name: str, largest: int) -> None:
        """Record ``largest`` as a value of feature ``name``."""
        self.observed_max[name] = max(self.observed_max.get(name, -1), largest)

    def merge(self, other: Accumulator) -> None:
        """Add what another accumulator observed (one filled on another thread)."""
        for name, largest in other.observed_max.items():
            self.observe_max(name, largest)


def stage_codes(columns: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Stage code of each row (the latest stage among its flags; ``unflagged`` if none) and the flag bitmask."""
    n = len(columns["request_id"])
    stage = np.full(n, UNFLAGGED, dtype=np.int8)
    flags = np.zeros(n, dtype=np.int8)
    for code in reversed(range(len(STAGES))):  # latest stage last, so it wins
        flag = columns[STAGES[code]].astype(bool)
        stage[flag] = code
        flags |= flag.astype(np.int8) << code
    return stage, flags


def group_rows(request_id: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Runs of equal request ids: (run start positions, run request ids, run lengths). O(n) on grouped files."""
    if not len(request_id):
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    starts = np.flatnonzero(np.r_[True, request_id[1:] != request_id[:-1]])
    lengths = np.diff(np.r_[starts, len(request_id)])
    return starts, request_id[starts], lengths


def fill_requests(
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


def item_columns(columns: Mapping[str, np.ndarray], acc: Accumulator) -> dict[str, np.ndarray]:
    """The item and feedback columns of stage or exposure rows, with the upload time codes (UTC+8)."""
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


def fixed_lists(values: np.ndarray) -> pa.FixedSizeListArray:
    """A ``[n, k]`` array as an Arrow column of fixed-size lists of ``k``."""
    width = values.shape[1]
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), width)


@dataclass
class RequestIndex:
    """The day's sorted request ids and where the rows of each source file belong."""

    ids: np.ndarray
    stage_row_request: np.ndarray  # request row of every all_stage row
    exposure_row_request: np.ndarray  # request row of every realshow row
    columns: dict[str, np.ndarray]  # request_timestamp and user ids per request
    join_counts: dict[str, int] = field(default_factory=dict)  # requests of realshow, and those not in all_stage


def index_requests(
    files: DayFiles, stage_rows: Mapping[str, np.ndarray], exposure_rows: Mapping[str, np.ndarray]
) -> RequestIndex:
    """Sort a whole day's request ids and place every stage and exposure row in its request."""
    stage_starts, stage_run_ids, stage_run_len = group_rows(stage_rows["request_id"])
    exp_starts, exp_run_ids, exp_run_len = group_rows(exposure_rows["request_id"])
    ids = np.unique(np.concatenate([stage_run_ids, exp_run_ids]))
    stage_run_rows = np.searchsorted(ids, stage_run_ids)
    exp_run_rows = np.searchsorted(ids, exp_run_ids)
    columns = fill_requests(
        ids,
        [
            (files.realshow, exposure_rows, exp_starts, exp_run_rows),
            (files.all_stage, stage_rows, stage_starts, stage_run_rows),
        ],
    )
    return RequestIndex(
        join_counts={
            "exposure_requests": len(exp_run_ids),
            "exposure_requests_without_stage_rows": len(np.setdiff1d(exp_run_ids, stage_run_ids)),
        },
        ids=ids,
        stage_row_request=np.repeat(stage_run_rows, stage_run_len),
        exposure_row_request=np.repeat(exp_run_rows, exp_run_len).astype(np.int32),
        columns=columns,
    )


def candidate_columns(
    stage_rows: Mapping[str, np.ndarray], index: RequestIndex, acc: Accumulator
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """All_stage rows sorted by (request, stage), file order kept within a stage, and the [R, 8] stage counts."""
    stage, flags = stage_codes(stage_rows)
    key = index.stage_row_request.astype(np.int64) * N_STAGES + stage
    order = None if np.all(key[1:] >= key[:-1]) else np.argsort(key, kind="stable")
    candidates: dict[str, np.ndarray] = {"stage": stage, "flags": flags, **item_columns(stage_rows, acc)}
    if order is not None:
        candidates = {name: values[order] for name, values in candidates.items()}
    n_requests = len(index.ids)
    stage_count = np.bincount(key, minlength=n_requests * N_STAGES).astype(np.int32).reshape(n_requests, N_STAGES)
    return candidates, stage_count


def requests_table(
    index: RequestIndex,
    n_exposures: np.ndarray,
    sequences: Mapping[str, np.ndarray],
    stage_count: np.ndarray,
    acc: Accumulator,
) -> pa.Table:
    """One row per request: context codes (UTC+8), user ids, the sequences and the CSR stage counts."""
    columns: dict[str, np.ndarray] = {"request_id": index.ids, "request_timestamp": index.columns["request_timestamp"]}
    columns.update(zip(TIME_CODES, time_codes(columns["request_timestamp"] // 1000), strict=True))
    for name in USER_COLUMNS:
        columns[name] = index.columns[name].astype(np.int32)
        acc.observe(name, columns[name])
    columns["n_exposures"] = n_exposures.astype(np.int32)
    return store_table(
        {
            **columns,
            **{name: fixed_lists(sequences[name]) for name in SEQ_STORE_COLUMNS},
            "stage_count": fixed_lists(stage_count),
        }
    )


class DayStats:
    """Row counts of a day, summed over its chunks."""

    def __init__(self) -> None:
        self.n = dict.fromkeys(("all_stage", "requests", "unflagged_rows", "multi_flag_rows"), 0)
        self.stage_rows = np.zeros(N_STAGES, dtype=np.int64)
        self.max_candidates = 0

    def add(self, candidates: Mapping[str, np.ndarray], stage_count: np.ndarray) -> None:
        """Add a chunk's candidate rows and stage counts."""
        flags = candidates["flags"]
        self.n["all_stage"] += len(flags)
        self.n["requests"] += len(stage_count)
        self.n["unflagged_rows"] += int((candidates["stage"] == UNFLAGGED).sum())
        self.n["multi_flag_rows"] += int(((flags & (flags - 1)) != 0).sum())
        self.stage_rows += stage_count.sum(axis=0)
        self.max_candidates = max(self.max_candidates, int(stage_count.sum(axis=1).max(initial=0)))
