"""Reading the official RecFlow release: where its files are, and validated columns out of its Feather files.

The layout (``docs/data_formats.md``)::

    all_stage/{date}.feather   realshow/{date}.feather
    seq_effective_50_dict/{date}.pkl   request_id_dict/{date}.pkl   ubm_seq_request_id_dict/{date}.pkl
    others/id_cnt.pkl   others/{retrieval_test,coarse_rank_test,rank_test}.feather
    others/realshow_video_info.feather   others/realshow_video_info_daily/{date}.feather

Both spellings of the renamed files are accepted (``retrieval_test``/``recall_test``,
``coarse_rank_test``/``prerank_test``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.feather as feather
import pyarrow.ipc as ipc

from stcrank.data.recflow.domains import ANY_INT32, ANY_INT64, FLAG, ID, Domain
from stcrank.data.recflow.errors import RecFlowFormatError
from stcrank.data.recflow.schema import TEST_FILES, is_date, parse_date

REQUIRED_DAY_FILES: tuple[str, ...] = ("all_stage", "realshow", "seq_effective_50_dict")
"""Per-day files without which a day cannot be imported."""

OPTIONAL_DAY_FILES: tuple[str, ...] = ("ubm_seq_request_id_dict", "request_id_dict")
"""Per-day files imported when present (``request_id_dict`` is not read: ``all_stage`` holds the same rows)."""

_SUFFIX = {
    "all_stage": ".feather",
    "realshow": ".feather",
    "seq_effective_50_dict": ".pkl",
    "request_id_dict": ".pkl",
    "ubm_seq_request_id_dict": ".pkl",
}


@dataclass(frozen=True)
class DayFiles:
    """Paths of one day's files (they may not exist)."""

    date: str
    all_stage: Path
    realshow: Path
    seq_effective_50_dict: Path
    request_id_dict: Path
    ubm_seq_request_id_dict: Path
    realshow_video_info_daily: Path

    def missing(self) -> list[Path]:
        """The required files that do not exist."""
        return [getattr(self, name) for name in REQUIRED_DAY_FILES if not getattr(self, name).is_file()]


class ReleaseLayout:
    """The official RecFlow release under a root directory.

    Args:
        root: The release directory (the one holding ``all_stage/``, ``realshow/``, ``others/``...).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise RecFlowFormatError(f"{self.root}: no such directory; expected the RecFlow release root")

    def day(self, date: str) -> DayFiles:
        """The files of one day."""
        return DayFiles(
            date=date,
            **{name: self.root / name / f"{date}{suffix}" for name, suffix in _SUFFIX.items()},
            realshow_video_info_daily=self.root / "others" / "realshow_video_info_daily" / f"{date}.feather",
        )

    def dates_found(self) -> list[str]:
        """Dates that have at least one required per-day file, sorted."""
        found: set[str] = set()
        for name in REQUIRED_DAY_FILES:
            folder = self.root / name
            if folder.is_dir():
                found.update(p.stem for p in folder.iterdir() if p.suffix == _SUFFIX[name] and is_date(p.stem))
        return sorted(found)

    def calendar(self) -> list[str]:
        """Every date from the first to the last one found, gaps included."""
        found = self.dates_found()
        if not found:
            return []
        first, last = parse_date(found[0]), parse_date(found[-1])
        return [(first + dt.timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]

    @property
    def id_cnt(self) -> Path:
        """``others/id_cnt.pkl``."""
        return self.root / "others" / "id_cnt.pkl"

    def test_file(self, name: str) -> Path | None:
        """The official test file ``name`` under either of its spellings, or None.

        Args:
            name: A key of :data:`~stcrank.data.recflow.schema.TEST_FILES`.
        """
        for spelling in TEST_FILES[name]:
            path = self.root / "others" / spelling
            if path.is_file():
                return path
        return None


def _open_feather(
    path: Path, columns: Sequence[str] | None, memory_map: bool = True
) -> ipc.RecordBatchFileReader | pa.Table:
    """Open a Feather file: a v2 file as a memory-mapped reader of the selected columns, a v1 file as a table.

    Raises:
        RecFlowFormatError: If the file is missing, truncated or corrupt, or lacks a column.
    """
    if not path.is_file():
        raise RecFlowFormatError(f"{path}: file not found")
    try:
        # Streaming reads use a plain file: pages of a memory map stay resident (and counted) until it is closed.
        source = pa.memory_map(str(path), "r") if memory_map else pa.OSFile(str(path), "r")
        reader = ipc.open_file(source)
        if columns is None:
            return reader
        names = reader.schema.names
        missing = [c for c in columns if c not in names]
        if missing:
            _raise_missing(path, missing, names)
        indices = sorted(names.index(c) for c in columns)
        # A streaming read decodes on the caller's thread (the importer reads ahead on threads of its own).
        options = ipc.IpcReadOptions(included_fields=indices, use_threads=memory_map)
        return ipc.open_file(source, options=options)
    except RecFlowFormatError:
        raise
    except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as v2_error:
        try:  # Feather v1 files are not Arrow IPC files
            return feather.read_table(str(path), memory_map=True)
        except Exception:  # report the v2 reader's error, which explains truncation
            raise RecFlowFormatError(
                f"{path}: cannot read as Feather ({type(v2_error).__name__}: {v2_error}); the file is truncated "
                "or corrupt, expected a complete Feather (Arrow IPC) file"
            ) from v2_error


def _raise_missing(path: Path, missing: Sequence[str], present: Sequence[str]) -> None:
    raise RecFlowFormatError(
        f"{path}: missing column {missing[0]!r}"
        + (f" (and {list(missing[1:])})" if len(missing) > 1 else "")
        + f"; expected an integer column of that name. Columns present: {list(present)}"
    )


ColumnKind = Literal["id", "binary", "int32", "int64"]
"""Shorthands for common domains: ``id`` (non-negative, int32), ``binary`` (0/1, int8), ``int32`` or ``int64``."""

_KIND_DOMAINS: dict[str, Domain] = {"id": ID, "binary": FLAG, "int32": ANY_INT32, "int64": ANY_INT64}


def _domain(kind: ColumnKind | Domain) -> Domain:
    return kind if isinstance(kind, Domain) else _KIND_DOMAINS[kind]


def _open_columns(
    path: Path, kinds: Mapping[str, Domain], memory_map: bool = True
) -> tuple[Iterator[pa.RecordBatch], int]:
    """Record batches of the selected columns (validated names and types) and the number of rows."""
    table_or_reader = _open_feather(path, list(kinds), memory_map)
    schema = table_or_reader.schema
    missing = [c for c in kinds if c not in schema.names]
    if missing:
        _raise_missing(path, missing, schema.names)
    for name in kinds:
        dtype = schema.field(name).type
        if not pa.types.is_integer(dtype):
            raise RecFlowFormatError(f"{path}: column {name!r} has type {dtype}; expected an integer column (int64)")
    if isinstance(table_or_reader, pa.Table):
        return iter(table_or_reader.to_batches()), table_or_reader.num_rows
    reader = table_or_reader
    # count_rows reads the batch headers only, nothing is decoded
    return (reader.get_batch(i) for i in range(reader.num_record_batches)), reader.count_rows()


def _check_batch(path: Path, batch: pa.RecordBatch | pa.Table, domains: Mapping[str, Domain]) -> None:
    """Refuse a column of a record batch (or table) with nulls or values outside its domain."""
    if not batch.num_rows:
        return
    for name, domain in domains.items():
        column = batch.column(name)
        if column.null_count:
            raise RecFlowFormatError(f"{path}: column {name!r} has null values; expected integers only")
        bounds = pc.min_max(column)  # one pass, without the GIL
        if bounds["min"].as_py() < domain.low or bounds["max"].as_py() > domain.high:
            domain.check(np.asarray(column), path, name)


def _decode(
    path: Path, batch: pa.RecordBatch, domains: Mapping[str, Domain], out: dict[str, np.ndarray], at: int
) -> None:
    """Check one record batch's columns against their domains and copy them, narrowed, into ``out`` at row ``at``."""
    _check_batch(path, batch, domains)  # in the domain before the (unchecked) cast into the output: nothing wraps
    n = batch.num_rows
    for name in domains:
        out[name][at : at + n] = batch.column(name).to_numpy()


def read_feather_columns(
    path: str | Path, columns: Sequence[str] | Mapping[str, ColumnKind | Domain]
) -> dict[str, np.ndarray]:
    """Read integer columns of a Feather file into numpy arrays, validating names, types, nulls and ranges.

    The file is memory-mapped and decoded one record batch at a time straight into the (narrower) output
    arrays, so a day's ``all_stage`` never exists as 30 int64 columns in memory.

    Args:
        path: The Feather file.
        columns: Columns to read, as a sequence (kept as int64) or a mapping to their
            :class:`~stcrank.data.recflow.domains.Domain` or :data:`ColumnKind` (checked and narrowed).

    Returns:
        Column name -> 1-D integer array.

    Raises:
        RecFlowFormatError: Naming the file and the column: file missing, truncated or corrupt, a column missing,
            not an integer type, with nulls, or with values outside its domain.
    """
    chunks = list(iter_feather_columns(path, columns, chunk_rows=None))
    return chunks[0]


def iter_feather_columns(
    path: str | Path,
    columns: Sequence[str] | Mapping[str, ColumnKind | Domain],
    chunk_rows: int | None,
    reserve: int = 0,
) -> Iterator[dict[str, np.ndarray]]:
    """Read integer columns of a Feather file chunk by chunk (whole record batches), validated as when read whole.

    Memory is bounded by a chunk: each record batch is decoded, checked and copied, narrowed, into the chunk's
    arrays before the next one is read, so only one record batch ever exists as int64.

    Args:
        path: The Feather file.
        columns: Columns to read (see :func:`read_feather_columns`).
        chunk_rows: Rows per chunk: record batches are gathered until a chunk holds at least this many rows
            (a chunk is larger only by less than one record batch); None reads the whole file as one chunk.
        reserve: Free rows to leave before each chunk's arrays, so that :func:`prepend_rows` can put up to that
            many rows in front of a chunk without copying it.

    Yields:
        Column name -> 1-D integer array, one dict per chunk; at least one (empty) chunk for an empty file.

    Raises:
        RecFlowFormatError: As :func:`read_feather_columns`.
    """
    path = Path(path)
    named = columns.items() if isinstance(columns, Mapping) else ((name, "int64") for name in columns)
    kinds = {name: _domain(kind) for name, kind in named}
    batches, n_rows = _open_columns(path, kinds, memory_map=chunk_rows is None)
    limit = n_rows if chunk_rows is None else max(1, int(chunk_rows))
    out: dict[str, np.ndarray] = {}
    at = reserve  # the chunk's rows so far end here, after the reserved ones
    yielded = False
    try:
        for batch in batches:
            n = batch.num_rows
            if not out:  # a chunk ends less than one record batch past the limit: sized by its first batch
                out = _grown({}, kinds, max(reserve + limit + (0 if chunk_rows is None else n), at + n), at)
            elif at + n > len(out[next(iter(kinds))]):  # a larger record batch than the first
                out = _grown(out, kinds, 2 * (at + n), at)
            _decode(path, batch, kinds, out, at)
            at += n
            if at - reserve >= limit:
                yield Chunk(out, reserve, at)
                yielded = True
                out, at = {}, reserve
        if at > reserve or not yielded:
            yield Chunk(out or _grown({}, kinds, reserve, reserve), reserve, at)
    except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as error:
        raise RecFlowFormatError(f"{path}: cannot decode a record batch ({error}); the file is corrupt") from error


class Chunk(dict):
    """The columns of a chunk of rows (name -> array), each preceded in its buffer by ``room`` free rows.

    Args:
        buffers: Column name -> buffer holding the free rows, then the chunk's rows.
        room: Free rows at the start of each buffer.
        end: Where the chunk's rows end in the buffers.
    """

    def __init__(self, buffers: Mapping[str, np.ndarray], room: int, end: int) -> None:
        super().__init__({name: values[room:end] for name, values in buffers.items()})
        self.room = room
        self._buffers = dict(buffers)

    def with_head(self, head: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The rows of ``head`` followed by the chunk's: copied into the free rows if they fit, else concatenated."""
        m = len(next(iter(head.values()))) if head else 0
        if m > self.room:
            return {name: np.concatenate([head[name], values]) for name, values in self.items()}
        out: dict[str, np.ndarray] = {}
        for name, values in self.items():
            joined = self._buffers[name][self.room - m : self.room + len(values)]
            joined[:m] = head[name]
            out[name] = joined
        self.room -= m
        return out


def _grown(out: dict[str, np.ndarray], kinds: Mapping[str, Domain], capacity: int, used: int) -> dict[str, np.ndarray]:
    """Arrays of ``capacity`` rows per column, holding the ``used`` first rows of ``out`` (if any)."""
    grown = {name: np.empty(capacity, dtype=domain.dtype) for name, domain in kinds.items()}
    for name, values in out.items():
        grown[name][:used] = values[:used]
    return grown


def iter_feather_tables(
    path: str | Path, columns: Mapping[str, ColumnKind | Domain], chunk_rows: int | None
) -> Iterator[pa.Table]:
    """Read integer columns of a Feather file as int64 Arrow tables, chunk by chunk, validated as when read whole.

    Like :func:`iter_feather_columns` (names, types, nulls and domains are checked the same way), but the columns
    keep the file's record batches (no copy where the file holds int64) and come out as int64, for writing on.

    Args:
        path: The Feather file.
        columns: Columns to read, mapped to their :class:`~stcrank.data.recflow.domains.Domain` or
            :data:`ColumnKind`.
        chunk_rows: Rows per chunk (whole record batches are gathered until a chunk holds at least this many);
            None reads the whole file as one table.

    Yields:
        Tables of the columns, in the order given, all int64; at least one (empty) table for an empty file.

    Raises:
        RecFlowFormatError: As :func:`read_feather_columns`.
    """
    path = Path(path)
    kinds = {name: _domain(kind) for name, kind in columns.items()}
    batches, n_rows = _open_columns(path, kinds, memory_map=chunk_rows is None)
    limit = n_rows if chunk_rows is None else max(1, int(chunk_rows))
    schema = pa.schema([(name, pa.int64()) for name in kinds])
    pending: list[pa.RecordBatch] = []
    size = 0
    yielded = False
    try:
        for batch in batches:
            _check_batch(path, batch, kinds)
            pending.append(batch.select(list(kinds)))
            size += batch.num_rows
            if size >= limit:
                yield pa.Table.from_batches(pending).cast(schema)
                yielded = True
                pending, size = [], 0
        if pending or not yielded:
            yield pa.Table.from_batches(pending, schema=None if pending else schema).cast(schema)
    except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as error:
        raise RecFlowFormatError(f"{path}: cannot decode a record batch ({error}); the file is corrupt") from error


def feather_column_names(path: str | Path) -> list[str]:
    """Column names of a Feather file (raises RecFlowFormatError if it cannot be read)."""
    return list(_open_feather(Path(path), None).schema.names)


def feather_num_rows(path: str | Path) -> int:
    """Number of rows of a Feather file, from its metadata (nothing is decoded; RecFlowFormatError if unreadable)."""
    opened = _open_feather(Path(path), None)
    return opened.num_rows if isinstance(opened, pa.Table) else opened.count_rows()
