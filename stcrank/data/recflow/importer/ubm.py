"""A day's ``ubm`` table: from ``ubm_seq_request_id_dict``, or derived from the stage rows already imported."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from stcrank.data.recflow.errors import RecFlowFormatError
from stcrank.data.recflow.importer.rows import UNFLAGGED, Accumulator, check_ids, narrow
from stcrank.data.recflow.importer.sequences import SEQ_BATCH_ITEMS
from stcrank.data.recflow.importer.writing import Clock, write_tables
from stcrank.data.recflow.official import DayFiles
from stcrank.data.recflow.pickles import iter_dict_pickle
from stcrank.data.recflow.schema import DAYS_DIR, ITEM_ID_COLUMNS, N_STAGES, STAGE_ARRAY_COLUMNS, STAGE_CODE

logger = logging.getLogger(__name__)

UbmSource = Literal["pickle", "all_stage", "none"]
"""Where a day's ``ubm`` table comes from: the UBM pickle, the imported stage rows of past requests, or nowhere."""


def ubm_batch(path: Path, items: list[tuple[Any, Any]]) -> tuple[np.ndarray, np.ndarray, np.ndarray, set[str], int]:
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
                if code < 0 or code == UNFLAGGED:
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


def ubm_columns(path: Path, matrix: np.ndarray, observed: dict[str, int]) -> dict[str, np.ndarray]:
    """The 8 stage-array columns of ``(n, 8)`` UBM rows, checked and narrowed (``observed`` gets the largest ids)."""
    columns: dict[str, np.ndarray] = {}
    for j, name in enumerate(STAGE_ARRAY_COLUMNS):
        values = matrix[:, j]
        if name in ITEM_ID_COLUMNS:
            values = check_ids(values, path, f"column {j} ({name})")
            if len(values):
                observed[name] = max(observed.get(name, -1), int(values.max()))
        elif name == "effective_view":
            values = values.astype(np.int8)
        elif name != "upload_timestamp":
            values = narrow(values, np.int32, path, f"column {j} ({name})")
        columns[name] = np.ascontiguousarray(values)
    return columns


def read_ubm(path: Path) -> tuple[pa.Table, dict[str, int], dict[str, int]]:
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
        rid, stage, matrix, batch_unknown, batch_n_unknown = ubm_batch(path, items)
        n_requests += len(items)
        n_unknown += batch_n_unknown
        unknown |= batch_unknown
        del items
        parts["request_id"].append(rid)
        parts["stage"].append(stage)
        for name, values in ubm_columns(path, matrix, observed).items():
            parts[name].append(values)
    if unknown:
        logger.warning("%s: ignored unknown stage keys %s", path, sorted(unknown))
    empty = ubm_columns(path, np.zeros((0, len(STAGE_ARRAY_COLUMNS)), np.int64), {})
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


def import_ubm(
    files: DayFiles,
    partition: Path,
    acc: Accumulator,
    ubm: UbmSource,
    referenced: np.ndarray | None,
    store_root: Path | None,
    clock: Clock,
    stats: dict[str, Any],
) -> None:
    """Write the day's ``ubm`` table from the UBM pickle, or derive it from the imported stage rows, or not."""
    stats["ubm_source"] = ubm
    if ubm == "none":
        return
    if ubm == "all_stage":
        with clock("ubm"):
            table, ubm_stats, observed = derive_ubm(
                referenced, partitions_before(store_root or partition.parent.parent, partition)
            )
            write_tables(partition, {"ubm": table})
    elif files.ubm_seq_request_id_dict.is_file():
        with clock("ubm"):
            table, ubm_stats, observed = read_ubm(files.ubm_seq_request_id_dict)
            write_tables(partition, {"ubm": table})
    else:
        logger.warning("%s: absent; the day has no UBM table", files.ubm_seq_request_id_dict)
        return
    stats.update(ubm_stats)
    for name, value in observed.items():
        acc.observed_max[name] = max(acc.observed_max.get(name, -1), value)


def partitions_before(store_root: Path, partition: Path) -> list[Path]:
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
