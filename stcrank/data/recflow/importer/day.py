"""Converting one day of the release into a partition directory, streamed in chunks or read whole."""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stcrank.data.recflow.domains import ID, ROW_DOMAINS
from stcrank.data.recflow.importer.coverage import check_coverage
from stcrank.data.recflow.importer.killpoints import kill_point
from stcrank.data.recflow.importer.pipeline import ReadAhead
from stcrank.data.recflow.importer.rows import (
    UNFLAGGED,
    Accumulator,
    DayStats,
    RequestIndex,
    candidate_columns,
    fill_requests,
    group_rows,
    index_requests,
    item_columns,
    requests_table,
)
from stcrank.data.recflow.importer.sequences import (
    SequenceSource,
    SpilledSequences,
    UnorderedSequencesError,
    read_sequences,
)
from stcrank.data.recflow.importer.ubm import UbmSource, import_ubm
from stcrank.data.recflow.importer.writing import ChunkWriter, Clock, store_table, write_tables
from stcrank.data.recflow.official import (
    Chunk,
    DayFiles,
    feather_num_rows,
    iter_feather_columns,
    read_feather_columns,
)
from stcrank.data.recflow.schema import STORE_STAGES

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DayOptions:
    """How the days of one import are converted.

    Attributes:
        chunk_rows: Rows of ``all_stage`` per streamed chunk; None reads each day whole.
        ubm: Where the ``ubm`` table comes from.
        min_join_coverage: Smallest fraction of a day's keys every joined file must match.
    """

    chunk_rows: int | None
    ubm: UbmSource
    min_join_coverage: float


def _referenced(sequences: dict[str, np.ndarray]) -> np.ndarray:
    """The past requests that the valid rows of a batch of sequences reference (sorted, unique)."""
    return np.unique(sequences["seq_request_id"][sequences["seq_time_ms"] > 0])


def _check_joins(files: DayFiles, stats: dict[str, Any], options: DayOptions) -> None:
    """Check the coverage of the day's joins and record it in ``stats``."""
    low = options.min_join_coverage
    exposure_requests = stats["exposure_requests"]
    stats["realshow_coverage"] = check_coverage(
        files.realshow,
        files.date,
        exposure_requests - stats["exposure_requests_without_stage_rows"],
        exposure_requests,
        "requests with exposures",
        "stage rows in all_stage",
        low,
    )
    stats["sequence_coverage"] = check_coverage(
        files.seq_effective_50_dict,
        files.date,
        stats["requests"] - stats["requests_without_sequence"],
        stats["requests"],
        "requests",
        "behaviour sequence",
        low,
    )
    if stats["corpus_source"] == "realshow_video_info_daily":
        stats["corpus_coverage"] = check_coverage(
            files.realshow_video_info_daily,
            files.date,
            stats["exposed_videos"] - stats["exposed_videos_outside_corpus"],
            stats["exposed_videos"],
            "exposed videos",
            "place in the random-negative corpus",
            low,
        )


def read_corpus(files: DayFiles, exposed: np.ndarray, acc: Accumulator, stats: dict[str, Any]) -> np.ndarray:
    """The day's corpus (``realshow_video_info_daily``, else the exposed videos so far), its source in ``stats``."""
    stats["exposed_videos"] = len(exposed)
    if files.realshow_video_info_daily.is_file():
        corpus = np.unique(read_feather_columns(files.realshow_video_info_daily, {"video_id": ID})["video_id"])
        acc.observe("video_id", corpus)
        acc.corpus = np.union1d(acc.corpus, corpus)
        stats["corpus_source"] = "realshow_video_info_daily"
        stats["exposed_videos_outside_corpus"] = len(np.setdiff1d(exposed, corpus, assume_unique=True))
        return corpus.astype(np.int32)
    acc.corpus = np.union1d(acc.corpus, exposed)
    stats["corpus_source"] = "exposures"
    stats["exposed_videos_outside_corpus"] = 0
    return acc.corpus.astype(np.int32)


def import_day(
    files: DayFiles, partition: Path, acc: Accumulator, options: DayOptions, previous: list[Path]
) -> dict[str, Any]:
    """Convert one whole day into a partition directory; returns the day's row counts and phase timings.

    Used when the rows of ``all_stage`` are not grouped by increasing request id (or ``chunk_rows`` is None):
    memory then grows with the day.
    """
    clock = Clock()
    with clock("read_feather"):
        stage_rows = read_feather_columns(files.all_stage, ROW_DOMAINS)
        exposure_rows = read_feather_columns(files.realshow, ROW_DOMAINS)
    with clock("index"):
        index = index_requests(files, stage_rows, exposure_rows)
        candidates, stage_count = candidate_columns(stage_rows, index, acc)
        exposures = {
            "request_row": index.exposure_row_request,
            "request_id": exposure_rows["request_id"],
            **item_columns(exposure_rows, acc),
        }
        n_exposures = np.bincount(exposures["request_row"], minlength=len(index.ids))
    with clock("sequences"):
        sequences, seq_stats = read_sequences(files.seq_effective_50_dict, index.ids, acc)
        seq_stats["chunk_rows"] = None
        corpus = read_corpus(files, np.unique(exposures["video_id"]).astype(np.int64), acc, seq_stats)
    tables = {
        "requests": requests_table(index, n_exposures, sequences, stage_count, acc),
        "candidates": store_table(candidates),
        "exposures": store_table(exposures),
        "corpus": store_table({"video_id": corpus}),
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
        "unflagged_rows": int((stage == UNFLAGGED).sum()),
        "multi_flag_rows": int(((flags & (flags - 1)) != 0).sum()),  # more than one bit set
        "stage_rows": {name: int(n) for name, n in zip(STORE_STAGES, stage_count.sum(axis=0), strict=True)},
        "corpus": len(corpus),
        **index.join_counts,
        **seq_stats,
    }
    _check_joins(files, stats, options)
    with clock("write"):
        write_tables(partition, tables)
    kill_point("day-tables")
    referenced = _referenced(sequences)
    # Free the day before the UBM dict, the largest input.
    del tables, candidates, exposures, stage_rows, exposure_rows, sequences, stage, flags, index
    import_ubm(files, partition, acc, options.ubm, referenced, previous, clock, stats)
    _check_ubm(files, stats, options)
    stats["phase_seconds"] = clock.seconds
    stats["phase_cpu_seconds"] = clock.cpu_seconds
    return stats


def _check_ubm(files: DayFiles, stats: dict[str, Any], options: DayOptions) -> None:
    """Check (UBM pickle) or report (UBM derived from all_stage) how many referenced past requests have rows."""
    if "ubm_referenced_requests" not in stats:
        return
    found, total = stats["ubm_referenced_found"], stats["ubm_referenced_requests"]
    if options.ubm == "pickle":
        stats["ubm_coverage"] = check_coverage(
            files.ubm_seq_request_id_dict,
            files.date,
            found,
            total,
            "past requests its behaviour sequences reference",
            "competing items",
            options.min_join_coverage,
        )
    elif total:  # derived: requests of days before the first imported one are not in the store
        stats["ubm_coverage"] = round(found / total, 6)
        logger.info(
            "%s: %d of the %d past requests its sequences reference are in the imported days", files.date, found, total
        )


CARRY_ROOM = 1 << 16
"""Rows kept free before each streamed chunk for the request carried over from the previous one."""


class UnsortedError(Exception):
    """The rows of ``all_stage`` are not grouped by request in increasing request id order (streaming needs it)."""


def import_day_chunked(
    files: DayFiles,
    partition: Path,
    acc: Accumulator,
    options: DayOptions,
    previous: list[Path],
    spill: bool = False,
) -> dict[str, Any]:
    """Convert one day chunk by chunk: ``all_stage`` is streamed, memory is bounded by ``chunk_rows`` rows.

    A request whose rows straddle two chunks is carried over whole into the next chunk. Raises :class:`UnsortedError`
    (before anything is complete) when the rows are not grouped by increasing request id; the caller then falls
    back to :func:`import_day`. Raises :class:`UnorderedSequencesError` when the keys of ``seq_effective_50_dict``
    are not in request id order and ``spill`` is False; the caller then imports the day again with ``spill``.
    """
    clock = Clock()
    n_stage_rows = feather_num_rows(files.all_stage)
    # The next chunk of all_stage is decoded, and the next sequences unpickled, on threads of their own while this
    # one converts the current chunk; the Parquet writer encodes the previous one behind it.
    chunks: ReadAhead[Chunk] = ReadAhead(
        lambda: iter_feather_columns(files.all_stage, ROW_DOMAINS, options.chunk_rows, reserve=CARRY_ROOM),
        depth=1,
        clock=clock,
        phase="read_feather",
        name="all_stage-reader",
    )
    sequences: SequenceSource | None = None
    writer: ChunkWriter | None = None
    try:
        with clock("read_feather"):
            exposure_rows = read_feather_columns(files.realshow, ROW_DOMAINS)  # exposures: ~2% of the stage rows
        exp_id = exposure_rows["request_id"]
        with clock("sequences"):
            if spill:
                sequences = SpilledSequences(files.seq_effective_50_dict, partition / ".sequences")
            else:
                sequences = SequenceSource.read_ahead(files.seq_effective_50_dict, options.chunk_rows, clock)
        writer = ChunkWriter(partition, clock=clock)
        stats = DayStats()
        ids_parts: list[np.ndarray] = []
        referenced = np.zeros(0, dtype=np.int64)
        last = np.iinfo(np.int64).min
        exposure_only = 0  # requests of realshow without a row in all_stage

        def flush(rows: dict[str, np.ndarray], upper: int) -> None:
            """Write the requests of ``rows`` (complete) and the realshow-only requests up to id ``upper``."""
            nonlocal last, referenced, exposure_only
            assert sequences is not None and writer is not None
            with clock("index"):
                starts, run_ids, run_len = group_rows(rows["request_id"])
                if len(run_ids) and (run_ids[0] <= last or np.any(run_ids[1:] <= run_ids[:-1])):
                    raise UnsortedError
                in_range = (exp_id > last) & (exp_id <= upper)
                exposure_part = {name: values[in_range] for name, values in exposure_rows.items()}
                exp_starts, exp_run_ids, exp_run_len = group_rows(exposure_part["request_id"])
                ids = np.union1d(run_ids, exp_run_ids)
                exposure_only += len(ids) - len(run_ids)
                run_rows, exp_run_rows = np.searchsorted(ids, run_ids), np.searchsorted(ids, exp_run_ids)
                columns = fill_requests(
                    ids,
                    [
                        (files.realshow, exposure_part, exp_starts, exp_run_rows),
                        (files.all_stage, rows, starts, run_rows),
                    ],
                )
                index = RequestIndex(ids, np.repeat(run_rows, run_len), np.zeros(0, np.int32), columns)
                candidates, stage_count = candidate_columns(rows, index, acc)
                n_exposures = np.bincount(np.repeat(exp_run_rows, exp_run_len), minlength=len(ids))
            with clock("sequences"):
                seq = sequences.take(ids, acc)
                if options.ubm != "none":
                    referenced = np.union1d(referenced, _referenced(seq))
            with clock("write"):
                writer.write("requests", requests_table(index, n_exposures, seq, stage_count, acc))
                writer.write("candidates", store_table(candidates))
            kill_point("chunk")
            stats.add(candidates, stage_count)
            ids_parts.append(ids)
            if len(ids):
                last = int(ids[-1])

        carry: dict[str, np.ndarray] | None = None
        rows_left = n_stage_rows
        while True:
            with clock("wait_feather"):
                chunk = next(chunks, None)
            if chunk is None:
                break
            rows_left -= len(chunk["request_id"])
            if carry is not None:  # the request the last chunk ended in, in front of this one (not copied)
                chunk = chunk.with_head(carry)
                carry = None
            if rows_left <= 0:  # the file's last chunk: every request in it is complete
                flush(chunk, np.iinfo(np.int64).max)
                continue
            rid = chunk["request_id"]
            tail = int(np.flatnonzero(np.r_[True, rid[1:] != rid[:-1]])[-1]) if len(rid) else 0
            carry = {name: values[tail:] for name, values in chunk.items()}
            if tail:
                flush({name: values[:tail] for name, values in chunk.items()}, int(rid[tail]) - 1)
            del chunk, rid
        if carry is not None:  # the file held more rows than its metadata said
            flush(carry, np.iinfo(np.int64).max)
            carry = None
        with clock("sequences"):
            seq_stats = sequences.stats(sum(map(len, ids_parts)))
    finally:
        chunks.close()
        if writer is not None:
            with clock("write"):
                writer.close()
        if sequences is not None:
            sequences.close()
    ids = np.concatenate(ids_parts)
    with clock("index"):
        exposures = {
            "request_row": np.searchsorted(ids, exp_id).astype(np.int32),
            "request_id": exp_id,
            **item_columns(exposure_rows, acc),
        }
        n_exposures = np.bincount(exposures["request_row"], minlength=len(ids))
    corpus_stats: dict[str, Any] = {}
    with clock("sequences"):
        corpus = read_corpus(files, np.unique(exposures["video_id"]).astype(np.int64), acc, corpus_stats)
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
        **corpus_stats,
        "exposure_requests": len(np.unique(exp_id)),
        "exposure_requests_without_stage_rows": exposure_only,
        **seq_stats,
        "chunk_rows": options.chunk_rows,
    }
    _check_joins(files, result, options)
    with clock("write"):
        write_tables(partition, {"exposures": store_table(exposures), "corpus": store_table({"video_id": corpus})})
    kill_point("day-tables")
    exposure_rows.clear()  # free the inputs before the UBM table
    del exposures
    import_ubm(files, partition, acc, options.ubm, referenced, previous, clock, result)
    _check_ubm(files, result, options)
    result["phase_seconds"] = clock.seconds
    result["phase_cpu_seconds"] = clock.cpu_seconds
    return result


def import_one_day(
    files: DayFiles, partition: Path, acc: Accumulator, options: DayOptions, previous: list[Path]
) -> dict[str, Any]:
    """Import a day streamed in chunks, or whole when ``chunk_rows`` is None or its rows are not sorted.

    Args:
        files: The day's files.
        partition: The partition directory to write.
        acc: What the import learns across days.
        options: How to convert it.
        previous: The partitions this import has completed so far.
    """
    if options.chunk_rows is not None:
        try:
            try:
                return import_day_chunked(files, partition, acc, options, previous)
            except UnorderedSequencesError:
                logger.info(
                    "%s: keys not in increasing request id; spilling the sequences to disk and importing the day again",
                    files.seq_effective_50_dict,
                )
                shutil.rmtree(partition, ignore_errors=True)
                return import_day_chunked(files, partition, acc, options, previous, spill=True)
        except UnsortedError:
            logger.info("%s: rows not grouped by increasing request id; reading the day whole", files.all_stage)
            shutil.rmtree(partition, ignore_errors=True)
    return import_day(files, partition, acc, options, previous)
