"""A synthetic RecFlow release: the official on-disk layout, generated from a known ground truth.

:func:`synth_recflow` writes exactly the files, names, column orders and dtypes of the public release (see
``docs/data_formats.md``), so that the importer and every loader run on it as they run on the real files.

Ground truth (users, items, affinities and the watch model) is :class:`~stcrank.data.recflow.world.SyntheticWorld`.
On top of it, every request runs a **funnel of noisy stage scorers**. Each stage scores its input with the true
affinity plus Gaussian noise whose standard deviation shrinks towards the later stages (pre-rank 1.2, coarse
0.8, rank 0.5, re-rank 0.35, edge 0.25, against an affinity of standard deviation about 1) and keeps its top:

1. **retrieval** draws ``retrieved`` distinct items by popularity (not personalised);
2. **pre-rank** keeps ``prerank_keep``; a sample of ``stage_samples`` of the rest is logged as ``prerank_neg``;
3. **coarse rank** keeps ``coarse_keep``; a sample of the rest is logged as ``coarse_neg``;
4. **rank** orders its input (``rank_index`` = position) and keeps ``rank_keep``; a sample of the rest is
   logged as ``rank_neg``;
5. **re-rank** orders the rank output (``rerank_index``) and keeps its top 10;
6. **edge rank** orders those 10 and exposes the first ``E`` of them, ``E = 1 + Binomial(5, 0.62)`` (about
   4.1, as in the real data) or, for a fraction ``oversize_exposure_rate`` of requests, 7 or 8 (the release
   has requests with more than 6 exposures).

Every logged row carries exactly one flag, the furthest point it reached: ``realshow`` (exposed),
``rerank_pos`` (re-rank top 10, not exposed), ``rank_pos`` (rank top 10 dropped by the re-rank),
``rerank_neg`` (a sample of the other items dropped by the re-rank), then ``rank_neg``, ``coarse_neg`` and
``prerank_neg``. Later stages therefore hold items of higher true affinity, as in the real funnel. Unexposed
rows have zero feedback; exposures get feedback from the watch model. ``rank_index`` / ``rerank_index`` are
-1 on rows that did not reach that stage.

Behaviour sequences are the user's last 50 effective views strictly before the request (crossing days, and
reaching into ``history_days`` simulated days before the first written day, which are not written), left-padded
with zeros. The UBM dict of a day covers every request referenced by that day's sequences, including requests of
the unwritten history days. Requests get 0-based ids in time order over the whole simulation, so the written
days' ids do not start at 0 when there is history.

Everything is vectorised over requests and candidates with numpy; Python loops run per day, per chunk of
requests and, to build the pickled dicts, per request. The output depends only on the arguments. Days are
simulated and written a chunk of requests at a time (Feather record batches; pickles through
:class:`~stcrank.data.recflow.pickles.DictPickleWriter`), so a day of 50M rows is never held in memory; the past
days' stage rows that UBM dicts need are spilled to a scratch directory under ``out`` and removed at the end.
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import pickle
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.ipc as ipc

from stcrank.data.recflow.pickles import DictPickleWriter
from stcrank.data.recflow.schema import (
    ALL_STAGE_COLUMNS,
    FEEDBACK_COLUMNS,
    SEQ_ARRAY_COLUMNS,
    SEQ_LEN,
    STAGE_ARRAY_COLUMNS,
    STAGE_CODE,
    STAGES,
    parse_date,
)
from stcrank.data.recflow.time_features import day_start_seconds
from stcrank.data.recflow.world import N_CATEGORY_ONE, SyntheticWorld, category_one_ids

logger = logging.getLogger(__name__)

STAGE_NOISE: dict[str, float] = {"prerank": 1.2, "coarse": 0.8, "rank": 0.5, "rerank": 0.35, "edge": 0.25}
"""Standard deviation of each stage scorer's noise."""

RERANK_KEEP = 10
RANK_TOP = 10
EXPOSURE_TRIALS, EXPOSURE_P = 5, 0.62
SWIPE_GAP_MS = 1_000
_N = len(STAGES)
FEATHER_CHUNK_ROWS = 65_536
"""Rows per Feather record batch (``pyarrow.feather.write_feather``'s default, which pandas uses)."""


@dataclass(frozen=True)
class _Funnel:
    retrieved: int
    prerank_keep: int
    coarse_keep: int
    rank_keep: int
    stage_samples: int
    oversize_exposure_rate: float
    retrieval_pool: int = 1
    retrieval_noise: float = 0.5

    def validate(self) -> None:
        sizes = (self.retrieved, self.prerank_keep, self.coarse_keep, self.rank_keep, RERANK_KEEP)
        if any(a <= b for a, b in itertools.pairwise(sizes)):
            raise ValueError(
                "funnel sizes must strictly decrease: retrieved > prerank_keep > coarse_keep > rank_keep > "
                f"{RERANK_KEEP}; got {sizes[:4]}"
            )
        if self.stage_samples < 0 or not 0 <= self.oversize_exposure_rate <= 1:
            raise ValueError("stage_samples must be >= 0 and oversize_exposure_rate in [0, 1]")
        if self.retrieval_pool < 1 or not self.retrieval_noise >= 0:
            raise ValueError(
                f"retrieval_pool must be >= 1 and retrieval_noise >= 0; got {self.retrieval_pool}, "
                f"{self.retrieval_noise}"
            )


@dataclass
class _DayRows:
    """The logged rows of one simulated day, sorted by request then stage."""

    first_request_id: int
    request_user: np.ndarray  # [R]
    request_ms: np.ndarray  # [R]
    row_request: np.ndarray  # [n] local request index
    row_video: np.ndarray
    row_stage: np.ndarray
    row_rank_index: np.ndarray
    row_rerank_index: np.ndarray
    feedback: dict[str, np.ndarray]  # [n], zero outside exposures
    exposure_ms: np.ndarray  # [n], 0 outside exposures
    stage_offsets: np.ndarray  # [R * 7 + 1]

    @property
    def request_ids(self) -> np.ndarray:
        return self.first_request_id + np.arange(len(self.request_user), dtype=np.int64)


def _take(values: np.ndarray, columns: np.ndarray) -> np.ndarray:
    return np.take_along_axis(values, columns, axis=1)


def _sample_columns(rng: np.random.Generator, pool: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pick up to ``size`` random columns of each row where ``pool`` is True; columns come back sorted."""
    keys = np.where(pool, rng.random(pool.shape), np.inf)
    if size < pool.shape[1]:
        chosen = np.argpartition(keys, size - 1, axis=1)[:, :size] if size else keys[:, :0].astype(np.int64)
    else:
        chosen = np.broadcast_to(np.arange(pool.shape[1]), pool.shape).copy()
    valid = np.isfinite(_take(keys, chosen))
    chosen = np.where(valid, chosen, pool.shape[1])
    chosen.sort(axis=1)
    valid = chosen < pool.shape[1]
    return np.minimum(chosen, pool.shape[1] - 1), valid


def _simulate_chunk(
    world: SyntheticWorld, rng: np.random.Generator, users: np.ndarray, funnel: _Funnel
) -> dict[str, np.ndarray]:
    """Run the funnel for a chunk of requests; returns the logged rows (request-local index, video, stage...)."""
    n = len(users)
    rows = np.arange(n)[:, None]
    candidates = world.sample_personalised_retrieval(
        rng, users, funnel.retrieved, funnel.retrieval_pool, funnel.retrieval_noise
    )
    affinity = world.affinity(users[:, None], candidates)

    def run_stage(positions: np.ndarray, name: str, keep: int | None = None) -> np.ndarray:
        """Reorder ``positions`` by the stage's noisy score: fully, or only its top ``keep`` first (unordered)."""
        noisy = affinity[rows, positions] + STAGE_NOISE[name] * rng.standard_normal(positions.shape, np.float32)
        if keep is None:
            return _take(positions, np.argsort(-noisy, axis=1, kind="stable"))
        return _take(positions, np.argpartition(-noisy, keep - 1, axis=1))

    everything = np.broadcast_to(np.arange(funnel.retrieved), (n, funnel.retrieved))
    prerank = run_stage(everything, "prerank", funnel.prerank_keep)
    coarse = run_stage(prerank[:, : funnel.prerank_keep], "coarse", funnel.coarse_keep)
    rank = run_stage(coarse[:, : funnel.coarse_keep], "rank")
    rerank = run_stage(rank[:, : funnel.rank_keep], "rerank")
    edge = run_stage(rerank[:, :RERANK_KEEP], "edge")

    rank_index = np.full((n, funnel.retrieved), -1, dtype=np.int64)
    rank_index[rows, rank] = np.arange(rank.shape[1])
    rerank_index = np.full((n, funnel.retrieved), -1, dtype=np.int64)
    rerank_index[rows, rerank] = np.arange(rerank.shape[1])
    in_rerank_top = np.zeros((n, funnel.retrieved), dtype=bool)
    in_rerank_top[rows, rerank[:, :RERANK_KEEP]] = True
    in_rank_top = np.zeros((n, funnel.retrieved), dtype=bool)
    in_rank_top[rows, rank[:, :RANK_TOP]] = True

    exposures = 1 + rng.binomial(EXPOSURE_TRIALS, EXPOSURE_P, n)
    oversize = rng.random(n) < funnel.oversize_exposure_rate
    exposures = np.where(oversize, 7 + rng.integers(0, 2, n), exposures)
    slot = np.arange(RERANK_KEEP)[None, :]

    blocks: list[tuple[int, np.ndarray, np.ndarray]] = [
        (STAGE_CODE["realshow"], edge, slot < exposures[:, None]),
        (STAGE_CODE["rerank_pos"], edge, slot >= exposures[:, None]),
        (STAGE_CODE["rank_pos"], rank[:, :RANK_TOP], ~in_rerank_top[rows, rank[:, :RANK_TOP]]),
    ]
    dropped_by_rerank = rerank[:, RERANK_KEEP:]
    samples = [
        ("rerank_neg", dropped_by_rerank, ~in_rank_top[rows, dropped_by_rerank]),
        ("rank_neg", rank[:, funnel.rank_keep :], None),
        ("coarse_neg", coarse[:, funnel.coarse_keep :], None),
        ("prerank_neg", prerank[:, funnel.prerank_keep :], None),
    ]
    for name, dropped, pool in samples:
        pool = np.ones(dropped.shape, dtype=bool) if pool is None else pool
        chosen, valid = _sample_columns(rng, pool, funnel.stage_samples)
        blocks.append((STAGE_CODE[name], _take(dropped, chosen), valid))

    request, position, stage = [], [], []
    for code, positions, mask in blocks:
        r, c = np.nonzero(mask)
        request.append(r)
        position.append(positions[r, c])
        stage.append(np.full(len(r), code, dtype=np.int64))
    request, position, stage = (np.concatenate(x) for x in (request, position, stage))
    order = np.argsort(request * _N + stage, kind="stable")
    request, position, stage = request[order], position[order], stage[order]
    return {
        "request": request,
        "video": candidates[request, position],
        "stage": stage,
        "rank_index": rank_index[request, position],
        "rerank_index": rerank_index[request, position],
    }


def _simulate_day(
    world: SyntheticWorld,
    seed: int,
    day: int,
    day_start_ms: int,
    first_request_id: int,
    requests_per_user_day: float,
    funnel: _Funnel,
) -> tuple[int, Iterator[_DayRows]]:
    """Simulate one day: ``(number of requests, iterator of the day's chunks of requests in time order)``.

    Chunks hold about a million retrieved candidates each, so the day never exists in memory at once; the draws
    come from one generator per day in chunk order, so the output does not depend on how the chunks are consumed.
    """
    rng = np.random.default_rng([seed, 1, day])
    counts = rng.poisson(requests_per_user_day, world.n_users)
    request_user = np.repeat(np.arange(world.n_users), counts)
    request_ms = day_start_ms + rng.integers(0, 86_400_000, len(request_user))
    order = np.argsort(request_ms, kind="stable")
    request_user, request_ms = request_user[order], request_ms[order]
    chunk = max(1, 1_000_000 // funnel.retrieved)

    def chunks() -> Iterator[_DayRows]:
        for start in range(0, len(request_user), chunk):
            users, stamps = request_user[start : start + chunk], request_ms[start : start + chunk]
            yield _finish_chunk(world, rng, first_request_id + start, users, stamps, funnel)

    return len(request_user), chunks()


def _finish_chunk(
    world: SyntheticWorld,
    rng: np.random.Generator,
    first_request_id: int,
    request_user: np.ndarray,
    request_ms: np.ndarray,
    funnel: _Funnel,
) -> _DayRows:
    """Run the funnel and the watch model for a chunk of requests."""
    rows = _simulate_chunk(world, rng, request_user, funnel)
    exposed = np.flatnonzero(rows["stage"] == STAGE_CODE["realshow"])
    feedback = {name: np.zeros(len(rows["request"]), dtype=np.int64) for name in FEEDBACK_COLUMNS}
    sampled = world.sample_watch(rng, request_user[rows["request"][exposed]], rows["video"][exposed])
    for name, values in sampled.items():
        feedback[name][exposed] = values
    # An exposure starts when the previous one of its request ends (plus a swipe): exclusive cumsum per request.
    spent = feedback["playing_time"][exposed] + SWIPE_GAP_MS
    total = np.cumsum(spent)
    request_of = rows["request"][exposed]
    first = np.r_[True, request_of[1:] != request_of[:-1]]
    group_start = np.maximum.accumulate(np.where(first, np.arange(len(exposed)), 0))
    before = total - spent - (total - spent)[group_start]
    exposure_ms = np.zeros(len(rows["request"]), dtype=np.int64)
    exposure_ms[exposed] = request_ms[request_of] + before

    stage_counts = np.bincount(rows["request"] * _N + rows["stage"], minlength=len(request_user) * _N)
    return _DayRows(
        first_request_id=first_request_id,
        request_user=request_user,
        request_ms=request_ms,
        row_request=rows["request"],
        row_video=rows["video"],
        row_stage=rows["stage"],
        row_rank_index=rows["rank_index"],
        row_rerank_index=rows["rerank_index"],
        feedback=feedback,
        exposure_ms=exposure_ms,
        stage_offsets=np.r_[0, np.cumsum(stage_counts)],
    )


class _Catalogue:
    """Static item columns as the release spells them."""

    def __init__(self, world: SyntheticWorld, epoch_s: int) -> None:
        self.world = world
        self.upload_timestamp = epoch_s - world.item_upload_age_s

    def columns(self, video: np.ndarray) -> dict[str, np.ndarray]:
        w = self.world
        return {
            "video_id": video,
            "author_id": w.item_author[video],
            "category_level_one": w.item_category_one[video],
            "category_level_two": w.item_category_two[video],
            "upload_type": w.item_upload_type[video],
            "upload_timestamp": self.upload_timestamp[video],
            "duration": w.item_duration_ms[video],
        }

    def stage_matrix(self, video: np.ndarray, effective_view: np.ndarray) -> np.ndarray:
        cols = self.columns(video)
        cols["effective_view"] = effective_view
        return np.stack([cols[name] for name in STAGE_ARRAY_COLUMNS], axis=1).astype(np.int64)


def _all_stage_table(day: _DayRows, world: SyntheticWorld, catalogue: _Catalogue, keep: np.ndarray) -> pa.Table:
    request = day.row_request[keep]
    user = day.request_user[request]
    video = day.row_video[keep]
    stage = day.row_stage[keep]
    columns = {
        "request_id": day.first_request_id + request,
        "request_timestamp": day.request_ms[request],
        "user_id": user,
        "device_id": world.user_device[user],
        "age": world.user_age[user],
        "gender": world.user_gender[user],
        "province": world.user_province[user],
        **catalogue.columns(video),
        **{name: (stage == STAGE_CODE[name]).astype(np.int64) for name in STAGES},
        "rank_index": day.row_rank_index[keep],
        "rerank_index": day.row_rerank_index[keep],
        **{name: values[keep] for name, values in day.feedback.items()},
    }
    return pa.table({name: pa.array(np.asarray(columns[name], dtype=np.int64)) for name in ALL_STAGE_COLUMNS})


def _stage_dict(day: _DayRows, matrix: np.ndarray, local: int) -> dict[str, np.ndarray]:
    offsets = day.stage_offsets[local * _N : local * _N + _N + 1]
    return {STAGES[s]: matrix[offsets[s] : offsets[s + 1]] for s in range(_N) if offsets[s + 1] > offsets[s]}


class _EventIndex:
    """Effective views sorted by (user, time), to look up the last :data:`SEQ_LEN` before each request."""

    NAMES: tuple[str, ...] = SEQ_ARRAY_COLUMNS

    def __init__(self, events: dict[str, np.ndarray], first_request_ms: int) -> None:
        self.events = events
        stamps = events["time_ms"]
        # keys need time offsets < 2**36 ms (795 days)
        self.base = min(int(stamps.min()), first_request_ms) if len(stamps) else first_request_ms
        key = (events["user"] << 36) + (stamps - self.base)
        self.order = np.argsort(key, kind="stable")
        self.key = key[self.order]

    def sequences(self, users: np.ndarray, request_ms: np.ndarray) -> np.ndarray:
        """Last effective views of each user strictly before each request, left-padded: ``[R, 50, 10]``."""
        end = np.searchsorted(self.key, (users << 36) + (request_ms - self.base), side="left")
        begin = np.searchsorted(self.key, users << 36, side="left")
        length = np.minimum(end - begin, SEQ_LEN)
        slot = np.arange(SEQ_LEN)[None, :]
        index = end[:, None] - SEQ_LEN + slot
        valid = slot >= SEQ_LEN - length[:, None]
        if not len(self.order):
            return np.zeros((len(users), SEQ_LEN, len(self.NAMES)), dtype=np.int64)
        picked = self.order[np.clip(index, 0, len(self.order) - 1)]
        seq = np.stack([self.events[name][picked] for name in self.NAMES], axis=2)
        return np.where(valid[:, :, None], seq, 0).astype(np.int64)


class _FeatherWriter:
    """A Feather v2 (Arrow IPC file) written batch by batch, as ``pyarrow.feather.write_feather`` lays it out."""

    def __init__(self, path: Path, compression: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.schema = pa.schema([(name, pa.int64()) for name in ALL_STAGE_COLUMNS])
        codec = None if compression == "uncompressed" else compression
        self._writer = ipc.new_file(str(path), self.schema, options=ipc.IpcWriteOptions(compression=codec))

    def write(self, table: pa.Table) -> None:
        self._writer.write_table(table, max_chunksize=FEATHER_CHUNK_ROWS)

    def close(self) -> None:
        self._writer.close()


class _Spill:
    """A day's per-row video and effective_view and its stage offsets, on disk for the UBM dicts of later days."""

    def __init__(self, folder: Path, first_request_id: int) -> None:
        self.folder = folder
        self.first_request_id = first_request_id
        folder.mkdir(parents=True)
        self._files = {name: (folder / f"{name}.bin").open("wb") for name in ("video", "effective_view", "counts")}
        self.n_requests = 0

    def append(self, rows: _DayRows) -> None:
        self._files["video"].write(rows.row_video.astype(np.int32).tobytes())
        self._files["effective_view"].write(rows.feedback["effective_view"].astype(np.int8).tobytes())
        self._files["counts"].write(np.diff(rows.stage_offsets).astype(np.int32).tobytes())
        self.n_requests += len(rows.request_user)

    def close(self) -> None:
        for file in self._files.values():
            file.close()
        counts = np.fromfile(self.folder / "counts.bin", dtype=np.int32).astype(np.int64)
        self.offsets = np.r_[0, np.cumsum(counts)]  # [R * 7 + 1]: bounded by the requests, not the rows
        self.video = np.memmap(self.folder / "video.bin", dtype=np.int32, mode="r")
        self.effective_view = np.memmap(self.folder / "effective_view.bin", dtype=np.int8, mode="r")

    def stage_dicts(self, catalogue: _Catalogue, local: np.ndarray) -> Iterator[dict[str, np.ndarray]]:
        """The stage dicts (as in ``request_id_dict``) of local request indices ``local`` (sorted)."""
        begin, end = self.offsets[local * _N], self.offsets[local * _N + _N]
        rows = np.concatenate([np.arange(b, e) for b, e in zip(begin.tolist(), end.tolist(), strict=True)])
        rows = rows.astype(np.int64) if len(rows) else np.zeros(0, np.int64)
        matrix = catalogue.stage_matrix(np.asarray(self.video[rows], np.int64), np.asarray(self.effective_view[rows]))
        at = 0
        for i in local.tolist():
            offsets = self.offsets[i * _N : i * _N + _N + 1] - self.offsets[i * _N] + at
            yield {STAGES[s]: matrix[offsets[s] : offsets[s + 1]] for s in range(_N) if offsets[s + 1] > offsets[s]}
            at = int(offsets[-1])


def _write_feather(table: pa.Table, path: Path, compression: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    feather.write_feather(table, str(path), compression=compression, chunksize=FEATHER_CHUNK_ROWS)


def _write_pickle(obj: object, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as file:
        pickle.dump(obj, file, protocol=4)


def default_item_count(users: int, retrieved: int, retrieval_pool: int = 1) -> int:
    """The number of videos :func:`synth_recflow` generates when ``items`` is not given.

    Args:
        users: Number of users.
        retrieved: Items retrieved per request.
        retrieval_pool: Popular items drawn per retrieved item.

    Returns:
        ``max(2000, 20 * users, 4 * retrieved * retrieval_pool)``.
    """
    return max(2000, 20 * users, 4 * retrieved * retrieval_pool)


def synth_recflow(
    *,
    out: str,
    users: int = 200,
    days: int = 4,
    seed: int = 0,
    items: int | None = None,
    requests_per_user_day: float = 3.0,
    start_date: str = "2024-01-13",
    history_days: int = 1,
    retrieved: int = 1000,
    prerank_keep: int = 500,
    coarse_keep: int = 250,
    rank_keep: int = 100,
    stage_samples: int = 60,
    oversize_exposure_rate: float = 0.0,
    retrieval_pool: int = 1,
    retrieval_noise: float = 0.5,
    compression: Literal["lz4", "zstd", "uncompressed"] = "lz4",
    request_id_dict: bool = True,
    overwrite: bool = False,
) -> None:
    """Generate a synthetic RecFlow release in the official on-disk layout.

    Users, items and a funnel of noisy stage scorers with a known ground truth (see ``docs/data_formats.md``)
    produce ``all_stage/``, ``realshow/``, the three per-day pickles and ``others/`` exactly as the public
    release lays them out. The last day is the test day. About ``13 + 4 * stage_samples`` rows are logged per
    request, so ``users * requests_per_user_day * (13 + 4 * stage_samples)`` rows a day: e.g. 4,000 users,
    6 requests a day and ``stage_samples=48`` give about 5M ``all_stage`` rows a day, 40,000 users about 50M (the
    release has about 51M).

    Days are simulated and written in chunks of requests (Feather record batches, pickles batch by batch), so
    memory is bounded by a chunk plus per-request and per-exposure arrays, not by the rows of a day.

    Args:
        out: Directory to write the release into (created).
        users: Number of users.
        days: Number of days to write (the last one is the test day).
        seed: Random seed; the output depends only on the arguments.
        items: Number of videos; default :func:`default_item_count`.
        requests_per_user_day: Mean number of requests per user and day (Poisson).
        start_date: First written day, ``YYYY-MM-DD``.
        history_days: Days simulated before ``start_date`` and not written, so that the first day's behaviour
            sequences and UBM dict reach back before it, as in the release.
        retrieved: Items retrieved per request (the funnel's input).
        prerank_keep: Items the pre-rank stage keeps.
        coarse_keep: Items the coarse-rank stage keeps.
        rank_keep: Items the rank stage keeps (the re-rank keeps 10, the edge exposes up to 6).
        stage_samples: Dropped items logged per request for each of prerank_neg, coarse_neg, rank_neg and
            rerank_neg.
        oversize_exposure_rate: Fraction of requests with 7 or 8 exposures instead of at most 6.
        retrieval_pool: 1 (the default) retrieves ``retrieved`` items by popularity alone, not personalised, so
            the items dropped early (``prerank_neg``, ``coarse_neg``) are less liked than a random exposed item.
            Above 1, retrieval keeps the ``retrieved`` best of ``retrieval_pool * retrieved`` popular items by the
            user's true affinity plus noise: a personalised retrieval stage, under which every stage's items are
            better than random ones (see :func:`stcrank.data.recflow.funnel_truth.stage_truth`).
        retrieval_noise: Standard deviation of the personalised retrieval score's noise.
        compression: Compression of the Feather files (pandas writes lz4 by default).
        request_id_dict: Write ``request_id_dict/`` (the importer does not read it; it is as large as
            ``all_stage``).
        overwrite: Replace ``out`` if it exists.
    """
    if users < 1 or days < 1 or history_days < 0:
        raise ValueError("users and days must be >= 1 and history_days >= 0")
    funnel = _Funnel(
        retrieved,
        prerank_keep,
        coarse_keep,
        rank_keep,
        stage_samples,
        oversize_exposure_rate,
        retrieval_pool,
        retrieval_noise,
    )
    funnel.validate()
    items = items if items is not None else default_item_count(users, retrieved, retrieval_pool)
    root = Path(out)
    if root.exists():
        if not overwrite and any(root.iterdir()):
            raise FileExistsError(f"{root} exists and is not empty; pass --overwrite true to replace it")
        shutil.rmtree(root)
    root.mkdir(parents=True)

    first_written = parse_date(start_date)
    first_simulated = first_written - dt.timedelta(days=history_days)
    epoch_days = (first_simulated - dt.date(1970, 1, 1)).days
    world = SyntheticWorld.create(users, items, seed)
    catalogue = _Catalogue(world, day_start_seconds(epoch_days))
    scratch = Path(tempfile.mkdtemp(prefix=".synth-", dir=root))
    try:
        _simulate_release(
            root,
            scratch,
            world,
            catalogue,
            seed,
            first_simulated,
            history_days,
            days,
            epoch_days,
            requests_per_user_day,
            funnel,
            compression,
            request_id_dict,
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    _write_pickle(
        {
            "user_id": int(world.n_users),
            "device_id": int(world.n_devices),
            "gender": 3,
            "age": 8,
            "province": 34,
            "video_id": int(world.n_items),
            "photo_id": int(world.n_items),
            "author_id": int(world.n_authors),
            "category_level_two": 128,
            "category_level_one": int(category_one_ids(np.arange(N_CATEGORY_ONE)).max()) + 1,  # ids 0..16 with 2 unused
            "upload_type": 6,
        },
        root / "others" / "id_cnt.pkl",
    )


def _simulate_release(
    root: Path,
    scratch: Path,
    world: SyntheticWorld,
    catalogue: _Catalogue,
    seed: int,
    first_simulated: dt.date,
    history_days: int,
    days: int,
    epoch_days: int,
    requests_per_user_day: float,
    funnel: _Funnel,
    compression: str,
    request_id_dict: bool,
) -> None:
    spills: list[_Spill] = []
    events: dict[str, list[np.ndarray]] = {}
    exposed_videos = np.zeros(0, dtype=np.int64)
    next_request_id = 0
    last = history_days + days - 1
    for day in range(history_days + days):
        date = (first_simulated + dt.timedelta(days=day)).isoformat()
        written = day >= history_days
        n_requests, chunks = _simulate_day(
            world,
            seed,
            day,
            day_start_seconds(epoch_days + day) * 1000,
            next_request_id,
            requests_per_user_day,
            funnel,
        )
        spill = _Spill(scratch / str(day), next_request_id)
        writers: dict[str, _FeatherWriter] = {}
        if written:
            writers = {name: _FeatherWriter(root / name / f"{date}.feather", compression) for name in _DAY_FEATHERS}
            if day == last:
                writers.update(
                    {n: _FeatherWriter(root / "others" / f"{n}.feather", compression) for n in _TEST_FEATHERS}
                )
        stage_dicts = (
            DictPickleWriter(root / "request_id_dict" / f"{date}.pkl") if written and request_id_dict else None
        )
        request_user: list[np.ndarray] = []
        request_ms: list[np.ndarray] = []
        n_rows = 0
        for rows in chunks:
            spill.append(rows)
            request_user.append(rows.request_user)
            request_ms.append(rows.request_ms)
            n_rows += len(rows.row_request)
            effective = np.flatnonzero(rows.feedback["effective_view"] == 1)
            video = rows.row_video[effective]
            day_events = {
                **catalogue.columns(video),
                "user": rows.request_user[rows.row_request[effective]],
                "time_ms": rows.exposure_ms[effective],
                "playing_time": rows.feedback["playing_time"][effective],
                "request_id": rows.first_request_id + rows.row_request[effective],
            }
            for name, values in day_events.items():
                events.setdefault(name, []).append(values)
            exposed = rows.row_stage == STAGE_CODE["realshow"]
            if written:
                exposed_videos = np.union1d(exposed_videos, rows.row_video[exposed])
                _write_chunk(writers, rows, world, catalogue)
            if stage_dicts is not None:
                matrix = catalogue.stage_matrix(rows.row_video, rows.feedback["effective_view"])
                stage_dicts.write(
                    (int(rid), _stage_dict(rows, matrix, i)) for i, rid in enumerate(rows.request_ids.tolist())
                )
        spill.close()
        spills.append(spill)
        for writer in writers.values():
            writer.close()
        if stage_dicts is not None:
            stage_dicts.close()
        next_request_id += n_requests
        if not written:
            continue
        all_events = {name: np.concatenate(parts) for name, parts in events.items()}
        events = {name: [values] for name, values in all_events.items()}
        users = np.concatenate(request_user) if request_user else np.zeros(0, np.int64)
        stamps = np.concatenate(request_ms) if request_ms else np.zeros(0, np.int64)
        referenced = _write_sequences(
            root / "seq_effective_50_dict" / f"{date}.pkl", all_events, users, stamps, spill.first_request_id
        )
        _write_ubm(root / "ubm_seq_request_id_dict" / f"{date}.pkl", referenced, spills, catalogue)
        _write_feather(
            pa.table({k: pa.array(v) for k, v in catalogue.columns(exposed_videos).items()}),
            root / "others" / "realshow_video_info_daily" / f"{date}.feather",
            compression,
        )
        if day == last:
            _write_feather(
                pa.table({k: pa.array(v) for k, v in catalogue.columns(exposed_videos).items()}),
                root / "others" / "realshow_video_info.feather",
                compression,
            )
        logger.info("synth-recflow: wrote %s (%d requests, %d rows)", date, n_requests, n_rows)


def _write_chunk(
    writers: dict[str, _FeatherWriter], rows: _DayRows, world: SyntheticWorld, catalogue: _Catalogue
) -> None:
    """Append a chunk's rows to the day's Feather files (and to the test files on the last day)."""
    stage = rows.row_stage
    selections = {
        "all_stage": np.arange(len(stage)),
        "realshow": np.flatnonzero(stage == STAGE_CODE["realshow"]),
        "retrieval_test": np.flatnonzero(stage == STAGE_CODE["realshow"]),
        "coarse_rank_test": np.flatnonzero(stage <= STAGE_CODE["coarse_neg"]),
        "rank_test": np.flatnonzero(stage <= STAGE_CODE["rank_neg"]),
    }
    for name, writer in writers.items():
        writer.write(_all_stage_table(rows, world, catalogue, selections[name]))


_DAY_FEATHERS: tuple[str, ...] = ("all_stage", "realshow")
_TEST_FEATHERS: tuple[str, ...] = ("retrieval_test", "coarse_rank_test", "rank_test")
SEQ_CHUNK_REQUESTS = 20_000
"""Requests per batch of ``seq_effective_50_dict`` (about 80 MB of sequences)."""
UBM_CHUNK_REQUESTS = 2_000
"""Past requests per batch of ``ubm_seq_request_id_dict``."""


def _write_sequences(
    path: Path, events: dict[str, np.ndarray], users: np.ndarray, request_ms: np.ndarray, first_request_id: int
) -> np.ndarray:
    """Write a day's ``seq_effective_50_dict`` batch by batch; returns the past request ids it references."""
    index = _EventIndex(events, int(request_ms.min()) if len(request_ms) else 0)
    referenced = np.zeros(0, dtype=np.int64)
    with DictPickleWriter(path) as writer:
        for start in range(0, len(users), SEQ_CHUNK_REQUESTS):
            stop = min(start + SEQ_CHUNK_REQUESTS, len(users))
            seq = index.sequences(users[start:stop], request_ms[start:stop])
            referenced = np.union1d(referenced, seq[:, :, 9][seq[:, :, 7] > 0])
            writer.write((first_request_id + start + i, seq[i]) for i in range(stop - start))
    return referenced


def _write_ubm(path: Path, referenced: np.ndarray, spills: list[_Spill], catalogue: _Catalogue) -> None:
    """Write a day's UBM dict: the stage dicts of every referenced past request, read back from the spills."""
    firsts = np.array([spill.first_request_id for spill in spills])
    day_of = np.searchsorted(firsts, referenced, side="right") - 1
    with DictPickleWriter(path) as writer:
        for start in range(0, len(referenced), UBM_CHUNK_REQUESTS):
            ids, days = referenced[start : start + UBM_CHUNK_REQUESTS], day_of[start : start + UBM_CHUNK_REQUESTS]
            for d in np.unique(days).tolist():
                chosen = ids[days == d]
                local = chosen - spills[d].first_request_id
                writer.write(zip(chosen.tolist(), spills[d].stage_dicts(catalogue, local), strict=True))
