"""Reading stcrank's RecFlow store (written by :func:`stcrank.data.recflow.importer.import_recflow`).

A store is trusted only through its ``manifest.json``: the importer writes it last, so a store whose import was
killed has no manifest and is refused, and a partition directory that the manifest does not list (a leftover
``days/.{date}.partial-*``) is never read.

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
from stcrank.data.recflow.schema import (
    DAYS_DIR,
    MANIFEST,
    N_STAGES,
    OTHERS_DIR,
    SEQ_ARRAY_COLUMNS,
    STAGE_CODE,
    STORE_FORMAT,
    STORE_FORMAT_VERSION,
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
    except json.JSONDecodeError as error:
        raise RecFlowFormatError(f"{path}: corrupt manifest ({error}); expected JSON") from error
    if manifest.get("format") != STORE_FORMAT or manifest.get("format_version") != STORE_FORMAT_VERSION:
        raise RecFlowFormatError(
            f"{path}: format {manifest.get('format')!r} version {manifest.get('format_version')!r}; expected "
            f"{STORE_FORMAT!r} version {STORE_FORMAT_VERSION} (re-import the release)"
        )
    return manifest


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


class RecFlowStore:
    """Read access to a RecFlow store.

    Args:
        root: The store directory.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.manifest = read_manifest(self.root)

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
        return (self.root / DAYS_DIR / day / f"{table}.parquet").is_file()

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
        if not path.is_file():
            raise RecFlowFormatError(f"{path}: not found; the store is damaged (re-import the release)")
        try:
            data = pq.read_table(path, columns=list(columns) if columns is not None else None, memory_map=True)
        except (pa.ArrowInvalid, OSError, KeyError) as error:
            raise RecFlowFormatError(f"{path}: cannot read columns {columns} ({error})") from error
        return {name: _to_numpy(data.column(name)) for name in data.column_names}

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
        data = self.read(day, "ubm", sorted({"request_id", "stage", *columns}))
        keep = np.isin(data["stage"], codes)
        data = {name: values[keep] for name, values in data.items()}
        request_ids = np.asarray(request_ids, dtype=np.int64)
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
        if name not in self.manifest.get("official_tests", {}) or not path.is_file():
            raise RecFlowFormatError(f"{path}: the source had no {name} file")
        data = pq.read_table(path, memory_map=True)
        return {column: _to_numpy(data.column(column)) for column in data.column_names}
