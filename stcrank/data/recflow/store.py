"""Reading stcrank's RecFlow store (written by :func:`stcrank.data.recflow.importer.import_recflow`).

A store is trusted only through its ``manifest.json``: the importer puts the store in place only once the
manifest is written, so a directory without one is refused. The manifest lists every file with its row count,
size and checksum, and every read first compares the file's size and footer row count with it and verifies the
Parquet page checksums (:func:`~stcrank.data.recflow.integrity.check_file`), so a damaged, truncated or swapped
partition is refused naming the file; ``stcrank data verify STORE`` compares the full checksums.

Tables come back as dicts of numpy arrays; fixed-size-list columns (the behaviour sequences, ``stage_count``)
come back as 2-D arrays. IDs are raw and 0-based here; the batch collate shifts them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from stcrank.data.recflow.errors import RecFlowFormatError
from stcrank.data.recflow.integrity import check_file
from stcrank.data.recflow.schema import (
    DAYS_DIR,
    MANIFEST,
    N_STAGES,
    OTHERS_DIR,
    SEQ_ARRAY_COLUMNS,
    STAGE_CODE,
    STORE_FORMAT,
    STORE_FORMAT_VERSION,
    is_date,
)


def read_manifest(root: str | Path) -> dict[str, Any]:
    """Read and check a store's manifest.

    Args:
        root: The store directory.

    Raises:
        RecFlowFormatError: If there is no manifest (not a store, or an import that did not finish) or it is of
            another format or version.
    """
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise RecFlowFormatError(
            f"{path}: not found; {root} is not a RecFlow store, or its import did not finish "
            "(run `stcrank data import-recflow --src RELEASE --dst STORE`)"
        )
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RecFlowFormatError(f"{path}: corrupt manifest ({error}); expected JSON") from error
    if not isinstance(manifest, dict):
        raise RecFlowFormatError(f"{path}: corrupt manifest (a JSON {type(manifest).__name__}); expected an object")
    if manifest.get("format") != STORE_FORMAT or manifest.get("format_version") != STORE_FORMAT_VERSION:
        raise RecFlowFormatError(
            f"{path}: format {manifest.get('format')!r} version {manifest.get('format_version')!r}; expected "
            f"{STORE_FORMAT!r} version {STORE_FORMAT_VERSION} (re-import the release)"
        )
    problem = _manifest_problem(manifest)
    if problem:
        raise RecFlowFormatError(f"{path}: corrupt manifest ({problem}); re-import the release")
    return manifest


def _manifest_problem(manifest: dict[str, Any]) -> str | None:
    """What is wrong with the parts of a manifest that reading the store relies on, or None."""
    days = manifest.get("days")
    if not isinstance(days, list) or not days or not all(isinstance(d, str) and is_date(d) for d in days):
        return "'days' is not a list of YYYY-MM-DD dates"
    if manifest.get("test_day") not in days or not isinstance(manifest.get("train_days"), list):
        return "'test_day' is not one of the days, or 'train_days' is missing"
    if not set(manifest["train_days"]) <= set(days):
        return "'train_days' are not among the days"
    sizes = manifest.get("feature_sizes")
    if not isinstance(sizes, dict) or not all(isinstance(v, int) and v > 0 for v in sizes.values()):
        return "'feature_sizes' is not a map of positive ints"
    files = manifest.get("files")
    if not isinstance(files, dict):
        return "'files' is missing"
    for relative, entry in files.items():
        parts = Path(relative).parts
        if Path(relative).is_absolute() or ".." in parts or not parts or parts[0] not in (DAYS_DIR, OTHERS_DIR):
            return f"file {relative!r} lies outside the store"
        if (
            not isinstance(entry, dict)
            or not all(isinstance(entry.get(key), int) and entry[key] >= 0 for key in ("rows", "bytes"))
            or not isinstance(entry.get("sha256"), str)
        ):
            return f"the entry of {relative!r} lacks its rows, bytes or sha256"
    if not isinstance(manifest.get("rows"), dict) or not isinstance(manifest.get("official_tests", {}), dict):
        return "'rows' or 'official_tests' is not a map"
    return None


@dataclass(frozen=True)
class StageLists:
    """Items of chosen stages per request, in CSR form.

    Request ``r``'s items are rows ``offsets[r]:offsets[r + 1]`` of every array in :attr:`columns`.
    """

    request_id: np.ndarray
    """Request ids, shape ``[R]``."""
    offsets: np.ndarray
    """int64, shape ``[R + 1]``."""
    columns: dict[str, np.ndarray]
    """Per-item columns (``video_id``, ``stage``...), each of shape ``[offsets[-1]]``."""

    def counts(self) -> np.ndarray:
        """Number of items of each request."""
        return np.diff(self.offsets)


def _to_numpy(column: pa.ChunkedArray) -> np.ndarray:
    array = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    if pa.types.is_fixed_size_list(array.type):
        return array.flatten().to_numpy().reshape(len(array), array.type.list_size)
    return array.to_numpy()


def stage_codes(stages: Iterable[str]) -> list[int]:
    """Sorted unique store codes of stage names (raises ValueError on an unknown name)."""
    codes = []
    for stage in stages:
        if stage not in STAGE_CODE:
            raise ValueError(f"unknown stage {stage!r}; the stages are {list(STAGE_CODE)}")
        codes.append(STAGE_CODE[stage])
    return sorted(set(codes))


@dataclass(frozen=True)
class DayPart:
    """A range of a day's requests and the candidate rows they own (the unit a bounded-memory loader reads).

    Attributes:
        day: The day.
        start: First request row.
        stop: One past the last request row.
        candidate_start: First candidate row of request ``start``.
        candidate_stop: One past the last candidate row of request ``stop - 1``.
    """

    day: str
    start: int
    stop: int
    candidate_start: int
    candidate_stop: int


def _read_rows(file: pq.ParquetFile, columns: Sequence[str] | None, start: int, stop: int) -> pa.Table:
    """Rows ``start:stop`` of a Parquet file, decoding only the row groups that hold them."""
    meta = file.metadata
    bounds = np.concatenate([[0], np.cumsum([meta.row_group(i).num_rows for i in range(meta.num_row_groups)])])
    groups = [i for i in range(meta.num_row_groups) if bounds[i] < stop and bounds[i + 1] > start]
    names = list(columns) if columns is not None else None
    if not groups:
        empty = file.schema_arrow.empty_table()
        return empty.select(names) if names is not None else empty
    table = file.read_row_groups(groups, columns=names)
    return table.slice(start - int(bounds[groups[0]]), stop - start)


class RecFlowStore:
    """Read access to a RecFlow store.

    Args:
        root: The store directory.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.manifest = read_manifest(self.root)

    def open(self, relative: str) -> pq.ParquetFile:
        """Open a file of the store after checking it against the manifest (size, row count; pages when read).

        Args:
            relative: Its path relative to the store, e.g. ``days/2024-01-13/requests.parquet``.

        Raises:
            RecFlowFormatError: If it is missing or differs from what the import wrote (naming the file).
        """
        return check_file(self.root, relative, self.manifest["files"].get(relative))

    @property
    def days(self) -> list[str]:
        """Every imported day, in chronological order."""
        return list(self.manifest["days"])

    @property
    def train_days(self) -> list[str]:
        """The imported days other than the test day."""
        return list(self.manifest["train_days"])

    @property
    def test_day(self) -> str:
        """The held-out day."""
        return str(self.manifest["test_day"])

    @property
    def feature_sizes(self) -> dict[str, int]:
        """Embedding-table size of every categorical feature (count + 2)."""
        return {name: int(size) for name, size in self.manifest["feature_sizes"].items()}

    def day_rows(self, day: str) -> dict[str, Any]:
        """The manifest's row counts of a day."""
        self._check_day(day)
        return dict(self.manifest["rows"][day])

    def _check_day(self, day: str) -> None:
        if day not in self.manifest["days"]:
            raise ValueError(f"day {day!r} is not in the store {self.root} (days: {self.days[0]} .. {self.days[-1]})")

    def has_table(self, day: str, table: str) -> bool:
        """Whether a day's partition has a table (``ubm`` is optional)."""
        self._check_day(day)
        return f"{DAYS_DIR}/{day}/{table}.parquet" in self.manifest["files"]

    def read(self, day: str, table: str, columns: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Read columns of one day's table.

        Args:
            day: A day of the store.
            table: ``requests``, ``candidates``, ``exposures``, ``corpus`` or ``ubm``.
            columns: Columns to read; all when None.

        Returns:
            Column name -> numpy array (2-D for fixed-size-list columns).
        """
        self._check_day(day)
        path = self.root / DAYS_DIR / day / f"{table}.parquet"
        file = self.open(f"{DAYS_DIR}/{day}/{table}.parquet")
        try:
            data = file.read(columns=list(columns) if columns is not None else None)
        except (pa.ArrowInvalid, OSError, KeyError) as error:
            raise RecFlowFormatError(f"{path}: cannot read columns {columns} ({error})") from error
        return {name: _to_numpy(data.column(name)) for name in data.column_names}

    def day_parts(self, day: str, chunk_rows: int | None) -> list[DayPart]:
        """Split a day into consecutive ranges of requests holding at most ``chunk_rows`` candidate rows each.

        A request with more than ``chunk_rows`` rows gets a part of its own. Reads only ``stage_count``.

        Args:
            day: A day of the store.
            chunk_rows: Largest number of candidate (``all_stage``) rows of a part; None gives the whole day.
        """
        counts = self.requests(day, ["stage_count"])["stage_count"].astype(np.int64).sum(axis=1)
        ends = np.cumsum(counts)
        total = int(ends[-1]) if len(ends) else 0
        if chunk_rows is None or total <= chunk_rows:
            return [DayPart(day, 0, len(counts), 0, total)]
        parts, start, row = [], 0, 0
        while start < len(counts):
            stop = max(int(np.searchsorted(ends, row + chunk_rows, side="right")), start + 1)
            parts.append(DayPart(day, start, stop, row, int(ends[stop - 1])))
            start, row = stop, int(ends[stop - 1])
        return parts

    def part(self, part: DayPart) -> RecFlowStore:
        """A view of this store in which ``part.day`` holds only the requests of ``part`` (see :class:`PartView`)."""
        return PartView(self, part)

    def requests(self, day: str, columns: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """One row per request of a day, sorted by request id."""
        return self.read(day, "requests", columns)

    def exposures(self, day: str, columns: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """The day's exposures (``realshow`` rows) in file order; ``request_row`` indexes :meth:`requests`."""
        return self.read(day, "exposures", columns)

    def candidates(self, day: str, columns: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Every stage row of the day, sorted by (request, stage), aligned with :meth:`stage_offsets`."""
        return self.read(day, "candidates", columns)

    def stage_offsets(self, day: str) -> np.ndarray:
        """CSR offsets into :meth:`candidates`: request ``r``'s stage ``s`` is rows ``o[r, s]:o[r, s + 1]``.

        Returns:
            int64 array ``[R, 9]`` (stage codes 0..7, then the request's end).
        """
        counts = self.requests(day, ["stage_count"])["stage_count"].astype(np.int64)
        flat = np.concatenate([[0], np.cumsum(counts.reshape(-1))])
        starts = flat[:-1].reshape(-1, N_STAGES)
        return np.concatenate([starts, (starts[:, -1] + counts[:, -1])[:, None]], axis=1)

    def stage_lists(self, day: str, stages: Sequence[str], columns: Sequence[str] = ("video_id",)) -> StageLists:
        """The items of the given stages of every request of a day (e.g. to draw stage negatives).

        Args:
            day: A day of the store.
            stages: Stage names (``"prerank_neg"``, ``"rank_pos"``...).
            columns: Candidate columns to return (``stage`` is always included).

        Returns:
            CSR lists aligned with the day's requests (a request with none of the stages has an empty list).
        """
        codes = stage_codes(stages)
        requests = self.requests(day, ["request_id", "stage_count"])
        counts = requests["stage_count"].astype(np.int64)
        data = self.candidates(day, sorted({"stage", *columns}))
        keep = np.isin(data["stage"], codes)
        per_request = counts[:, codes].sum(axis=1)
        return StageLists(
            request_id=requests["request_id"],
            offsets=np.concatenate([[0], np.cumsum(per_request)]),
            columns={name: values[keep] for name, values in data.items()},
        )

    def exposed_corpus(self, day: str) -> np.ndarray:
        """Video ids exposed up to and including ``day`` (raw ids, sorted): the random-negative pool."""
        return self.read(day, "corpus", ["video_id"])["video_id"]

    def sequences(
        self, day: str, columns: Sequence[str] = SEQ_ARRAY_COLUMNS
    ) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
        """Behaviour sequences of a day's requests.

        Args:
            day: A day of the store.
            columns: Sequence columns (names of :data:`~stcrank.data.recflow.schema.SEQ_ARRAY_COLUMNS`).

        Returns:
            ``(request_id [R], {column: [R, 50]}, valid [R, 50])``; left-padded, most recent last; a row is valid
            where its ``time_ms > 0``.
        """
        unknown = [c for c in columns if c not in SEQ_ARRAY_COLUMNS]
        if unknown:
            raise ValueError(f"unknown sequence columns {unknown}; choose from {list(SEQ_ARRAY_COLUMNS)}")
        wanted = ["request_id", "seq_time_ms", *(f"seq_{c}" for c in columns if c != "time_ms")]
        data = self.requests(day, wanted)
        values = {c: data[f"seq_{c}"] for c in columns}
        return data["request_id"], values, data["seq_time_ms"] > 0

    def ubm_stage_lists(
        self, day: str, request_ids: np.ndarray, stages: Sequence[str], columns: Sequence[str] = ("video_id",)
    ) -> StageLists:
        """Stage items of past requests from a day's UBM table (the requests its behaviour sequences reference).

        Args:
            day: A day of the store (with a ``ubm`` table).
            request_ids: The past requests to look up, shape ``[K]`` (unknown ids get empty lists).
            stages: Stage names to return.
            columns: UBM columns to return (``stage`` is always included).

        Returns:
            CSR lists aligned with ``request_ids``.
        """
        if not self.has_table(day, "ubm"):
            raise RecFlowFormatError(f"{self.root}/{DAYS_DIR}/{day}: no ubm table (the source had no UBM pickle)")
        codes = stage_codes(stages)
        request_ids = np.asarray(request_ids, dtype=np.int64)
        path = self.root / DAYS_DIR / day / "ubm.parquet"
        self.open(f"{DAYS_DIR}/{day}/ubm.parquet")
        # Read only the rows of the wanted stages and id range (row group by row group): the table of a large
        # day is larger than what one part of it references.
        filters = [("stage", "in", codes)]
        if len(request_ids):
            filters += [("request_id", ">=", int(request_ids.min())), ("request_id", "<=", int(request_ids.max()))]
        try:
            table = pq.read_table(
                path,
                columns=sorted({"request_id", "stage", *columns}),
                filters=filters,
                page_checksum_verification=True,
            )
        except (pa.ArrowInvalid, OSError, KeyError) as error:
            raise RecFlowFormatError(f"{path}: cannot read columns {columns} ({error})") from error
        data = {name: _to_numpy(table.column(name)) for name in table.column_names}
        keep = np.isin(data["request_id"], request_ids)
        data = {name: values[keep] for name, values in data.items()}
        begin = np.searchsorted(data["request_id"], request_ids, side="left")
        end = np.searchsorted(data["request_id"], request_ids, side="right")
        counts = end - begin
        rows = np.repeat(begin - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts) + np.arange(counts.sum())
        return StageLists(
            request_id=request_ids,
            offsets=np.concatenate([[0], np.cumsum(counts)]),
            columns={name: values[rows] for name, values in data.items() if name != "request_id"},
        )

    def official_test(self, name: str) -> dict[str, np.ndarray]:
        """An imported official test file (``retrieval_test``, ``coarse_rank_test`` or ``rank_test``)."""
        path = self.root / OTHERS_DIR / f"{name}.parquet"
        if name not in self.manifest.get("official_tests", {}):
            raise RecFlowFormatError(f"{path}: the source had no {name} file")
        try:
            data = self.open(f"{OTHERS_DIR}/{name}.parquet").read()
        except (pa.ArrowInvalid, OSError) as error:
            raise RecFlowFormatError(f"{path}: cannot be read ({error})") from error
        return {column: _to_numpy(data.column(column)) for column in data.column_names}


class PartView(RecFlowStore):
    """The store as seen by a loader of one :class:`DayPart`: its day holds only the part's requests.

    ``requests`` and ``candidates`` of that day are the part's rows (decoding only the row groups that hold them),
    ``exposures`` are those of the part's requests with ``request_row`` counted from the part's first request, so
    every per-request structure (stage offsets, stage lists, sequences) comes out aligned with the part. The
    corpus, the UBM table, the other days and the official tests are the store's.

    Args:
        store: The store.
        part: The part.
    """

    def __init__(self, store: RecFlowStore, part: DayPart) -> None:
        self.root = store.root
        self.manifest = store.manifest
        self.part_of_day = part

    def read(self, day: str, table: str, columns: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Read columns of a day's table; the part's rows only for its day's requests, candidates and exposures."""
        part = self.part_of_day
        if day != part.day or table not in ("requests", "candidates", "exposures"):
            return super().read(day, table, columns)
        self._check_day(day)
        path = self.root / DAYS_DIR / day / f"{table}.parquet"
        file = self.open(f"{DAYS_DIR}/{day}/{table}.parquet")
        try:
            if table == "exposures":
                # Exposures are in file order (about 2% of the stage rows): select the part's by request row.
                names = None if columns is None else sorted({"request_row", *columns})
                data = file.read(columns=names)
                row = data.column("request_row").to_numpy()
                keep = (row >= part.start) & (row < part.stop)
                out = {name: _to_numpy(data.column(name))[keep] for name in data.column_names}
                out["request_row"] = out["request_row"] - np.int32(part.start)
                return {name: out[name] for name in (columns if columns is not None else data.column_names)}
            start, stop = (
                (part.start, part.stop) if table == "requests" else (part.candidate_start, part.candidate_stop)
            )
            data = _read_rows(file, columns, start, stop)
        except (pa.ArrowInvalid, OSError, KeyError) as error:
            raise RecFlowFormatError(f"{path}: cannot read columns {columns} ({error})") from error
        return {name: _to_numpy(data.column(name)) for name in data.column_names}
