"""A day's ``ubm`` table: from ``ubm_seq_request_id_dict``, or derived from the stage rows already imported."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from stcrank.data.recflow.domains import STAGE_ARRAY_DOMAINS
from stcrank.data.recflow.importer.killpoints import kill_point
from stcrank.data.recflow.importer.rows import Accumulator
from stcrank.data.recflow.importer.sequences import SEQ_BATCH_ITEMS
from stcrank.data.recflow.importer.writing import Clock, store_table, write_tables
from stcrank.data.recflow.official import DayFiles
from stcrank.data.recflow.pickle_contents import ubm_batches
from stcrank.data.recflow.schema import ITEM_ID_COLUMNS, N_STAGES, STAGE_ARRAY_COLUMNS, STAGE_CODE

logger = logging.getLogger(__name__)

UbmSource = Literal["pickle", "all_stage", "none"]
"""Where a day's ``ubm`` table comes from: the UBM pickle, the imported stage rows of past requests, or nowhere."""


def ubm_columns(path: Path, matrix: np.ndarray, observed: dict[str, int]) -> dict[str, np.ndarray]:
    """The 8 stage-array columns of ``(n, 8)`` UBM rows, checked against their domains (and their largest ids)."""
    columns: dict[str, np.ndarray] = {}
    for j, name in enumerate(STAGE_ARRAY_COLUMNS):
        values = STAGE_ARRAY_DOMAINS[name].check(matrix[:, j], path, name, j)
        if name in ITEM_ID_COLUMNS and len(values):
            observed[name] = max(observed.get(name, -1), int(values.max()))
        columns[name] = np.ascontiguousarray(values)
    return columns


def sort_by_request_and_stage(columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Rows ordered by (request_id, stage), file order kept within a stage (no combined key that could overflow)."""
    rid, stage = columns["request_id"], columns["stage"]
    if len(rid) < 2:
        return columns
    ordered = bool(np.all((rid[1:] > rid[:-1]) | ((rid[1:] == rid[:-1]) & (stage[1:] >= stage[:-1]))))
    if ordered:
        return columns
    order = np.lexsort((stage, rid))  # stable: rows of a (request, stage) keep their order
    return {name: values[order] for name, values in columns.items()}


def _empty_ubm() -> dict[str, np.ndarray]:
    columns = {"request_id": np.zeros(0, np.int64), "stage": np.zeros(0, np.int8)}
    columns.update({name: np.zeros(0, STAGE_ARRAY_DOMAINS[name].dtype) for name in STAGE_ARRAY_COLUMNS})
    return columns


def read_ubm(path: Path, referenced: np.ndarray) -> tuple[pa.Table, dict[str, Any], dict[str, int]]:
    """The day's ``ubm_seq_request_id_dict`` as rows (request_id, stage, the 8 stage-array columns).

    The pickle is streamed (:func:`~stcrank.data.recflow.pickle_contents.ubm_batches`) and each batch of requests
    is turned into checked, narrowed columns at once, so the dict of arrays never exists whole. A request that
    occurs twice keeps its later value, as in the dict.

    Args:
        path: The pickle.
        referenced: The past requests the day's sequences reference (sorted, unique): how many of them the
            pickle covers is reported.

    Returns:
        The table, its row counts and coverage, and the largest id of each item feature (mutates nothing).
    """
    parts: dict[str, list[np.ndarray]] = {name: [] for name in ("request_id", "stage", *STAGE_ARRAY_COLUMNS)}
    item_of_row: list[np.ndarray] = []
    keys: list[np.ndarray] = []
    unknown: set[str] = set()
    observed: dict[str, int] = {}
    n_unknown = 0
    for batch in ubm_batches(path, SEQ_BATCH_ITEMS):
        first_item = sum(map(len, keys))
        keys.append(batch.keys)
        n_unknown += batch.n_unknown
        unknown |= batch.unknown
        item_of_row.append(batch.item + first_item)  # to keep the later value of a repeated key
        parts["request_id"].append(batch.request_id)
        parts["stage"].append(batch.stage)
        for name, values in ubm_columns(path, batch.matrix, observed).items():
            parts[name].append(values)
    if unknown:
        logger.warning("%s: ignored unknown stage keys %s", path, sorted(unknown))
    empty = _empty_ubm()
    columns: dict[str, np.ndarray] = {}
    for name in parts:  # one column at a time: the parts of the others are not copied meanwhile
        columns[name] = np.concatenate(parts[name]) if parts[name] else empty[name]
        parts[name] = []
    all_keys = np.concatenate(keys) if keys else np.zeros(0, np.int64)
    distinct = np.unique(all_keys)
    if len(distinct) < len(all_keys):  # a repeated key: the dict keeps its last value
        item = np.concatenate(item_of_row)
        last = np.zeros(len(distinct), dtype=np.int64)
        np.maximum.at(last, np.searchsorted(distinct, all_keys), np.arange(len(all_keys)))
        keep = item == last[np.searchsorted(distinct, columns["request_id"])]
        columns = {name: values[keep] for name, values in columns.items()}
    columns = sort_by_request_and_stage(columns)
    found = int(np.isin(referenced, distinct, assume_unique=True).sum())
    stats = {
        "ubm_requests": len(distinct),
        "ubm_rows": len(columns["request_id"]),
        "ubm_unknown_stage_keys": n_unknown,
        "ubm_referenced_requests": len(referenced),
        "ubm_referenced_found": found,
    }
    return store_table(columns), stats, observed


def import_ubm(
    files: DayFiles,
    partition: Path,
    acc: Accumulator,
    ubm: UbmSource,
    referenced: np.ndarray,
    previous: list[Path],
    clock: Clock,
    stats: dict[str, Any],
) -> None:
    """Write the day's ``ubm`` table from the UBM pickle, or derive it from the imported stage rows, or not.

    Args:
        files: The day's files.
        partition: The partition being written.
        acc: What the import learns across days.
        ubm: Where the table comes from.
        referenced: The past requests the day's sequences reference (sorted, unique).
        previous: The partitions this import has completed so far (``ubm="all_stage"`` reads only these and the
            day's own, never a partition left by another run).
        clock: The day's phase timer.
        stats: The day's counts (updated).
    """
    stats["ubm_source"] = ubm
    if ubm == "none":
        return
    if ubm == "all_stage":
        with clock("ubm"):
            table, ubm_stats, observed = derive_ubm(referenced, [*previous, partition])
            write_tables(partition, {"ubm": table})
    elif files.ubm_seq_request_id_dict.is_file():
        with clock("ubm"):
            table, ubm_stats, observed = read_ubm(files.ubm_seq_request_id_dict, referenced)
            write_tables(partition, {"ubm": table})
    else:
        logger.warning("%s: absent; the day has no UBM table", files.ubm_seq_request_id_dict)
        return
    kill_point("ubm")
    stats.update(ubm_stats)
    for name, value in observed.items():
        acc.observed_max[name] = max(acc.observed_max.get(name, -1), value)


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
    empty = _empty_ubm()
    columns = {
        name: np.concatenate([p[name] for p in parts]) if parts else empty[name] for name in ["request_id", *names]
    }
    columns = sort_by_request_and_stage(columns)
    observed = {n: int(columns[n].max()) for n in ITEM_ID_COLUMNS if len(columns[n])}
    stats = {
        "ubm_requests": found,
        "ubm_rows": len(columns["request_id"]),
        "ubm_unknown_stage_keys": 0,
        "ubm_referenced_requests": len(referenced),
        "ubm_referenced_found": found,
    }
    return store_table(columns), stats, observed
