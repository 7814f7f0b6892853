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
requests and, to build the pickled dicts, per request. The output depends only on the arguments.
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import pickle
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.feather as feather

from stcrank.data.recflow.schema import (
    ALL_STAGE_COLUMNS,
    FEEDBACK_COLUMNS,
    SEQ_LEN,
    STAGE_ARRAY_COLUMNS,
    STAGE_CODE,
    STAGES,
    parse_date,
)
from stcrank.data.recflow.time_features import day_start_seconds
from stcrank.data.recflow.world import SyntheticWorld

logger = logging.getLogger(__name__)

STAGE_NOISE: dict[str, float] = {"prerank": 1.2, "coarse": 0.8, "rank": 0.5, "rerank": 0.35, "edge": 0.25}
"""Standard deviation of each stage scorer's noise."""

RERANK_KEEP = 10
RANK_TOP = 10
EXPOSURE_TRIALS, EXPOSURE_P = 5, 0.62
SWIPE_GAP_MS = 1_000
_N = len(STAGES)


@dataclass(frozen=True)
class _Funnel:
    retrieved: int
    prerank_keep: int
    coarse_keep: int
    rank_keep: int
    stage_samples: int
    oversize_exposure_rate: float

    def validate(self) -> None:
        sizes = (self.retrieved, self.prerank_keep, self.coarse_keep, self.rank_keep, RERANK_KEEP)
        if any(a <= b for a, b in itertools.pairwise(sizes)):
            raise ValueError(
                "funnel sizes must strictly decrease: retrieved > prerank_keep > coarse_keep > rank_keep > "
                f"{RERANK_KEEP}; got {sizes[:4]}"
            )
        if self.stage_samples < 0 or not 0 <= self.oversize_exposure_rate <= 1:
            raise ValueError("stage_samples must be >= 0 and oversize_exposure_rate in [0, 1]")


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
    candidates = world.sample_retrieval(rng, n, funnel.retrieved)
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
) -> _DayRows:
    rng = np.random.default_rng([seed, 1, day])
    counts = rng.poisson(requests_per_user_day, world.n_users)
    request_user = np.repeat(np.arange(world.n_users), counts)
    request_ms = day_start_ms + rng.integers(0, 86_400_000, len(request_user))
    order = np.argsort(request_ms, kind="stable")
    request_user, request_ms = request_user[order], request_ms[order]

    chunk = max(1, 1_000_000 // funnel.retrieved)
    parts = []
    for start in range(0, len(request_user), chunk):
        part = _simulate_chunk(world, rng, request_user[start : start + chunk], funnel)
        part["request"] += start
        parts.append(part)
    if parts:
        rows = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    else:
        rows = {key: np.zeros(0, dtype=np.int64) for key in ("request", "video", "stage", "rank_index", "rerank_index")}

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


def _sequences(events: dict[str, np.ndarray], users: np.ndarray, request_ms: np.ndarray) -> np.ndarray:
    """Last :data:`SEQ_LEN` effective views of each user strictly before each request, left-padded: [R, 50, 10]."""
    stamps = np.concatenate([events["time_ms"], request_ms])
    base = int(stamps.min()) if len(stamps) else 0  # keys need time offsets < 2**36 ms (795 days)
    event_key = (events["user"] << 36) + (events["time_ms"] - base)
    order = np.argsort(event_key, kind="stable")
    event_key = event_key[order]
    end = np.searchsorted(event_key, (users << 36) + (request_ms - base), side="left")
    begin = np.searchsorted(event_key, users << 36, side="left")
    length = np.minimum(end - begin, SEQ_LEN)
    slot = np.arange(SEQ_LEN)[None, :]
    index = end[:, None] - SEQ_LEN + slot
    valid = slot >= SEQ_LEN - length[:, None]
    picked = order[np.clip(index, 0, max(len(order) - 1, 0))] if len(order) else np.zeros_like(index)
    names = ("video_id", "author_id", "category_level_two", "category_level_one", "upload_type")
    names += ("upload_timestamp", "duration", "time_ms", "playing_time", "request_id")
    seq = np.stack([events[name][picked] if len(order) else np.zeros_like(index) for name in names], axis=2)
    return np.where(valid[:, :, None], seq, 0).astype(np.int64)


def _write_feather(table: pa.Table, path: Path, compression: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    feather.write_feather(table, str(path), compression=compression)


def _write_pickle(obj: object, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as file:
        pickle.dump(obj, file, protocol=4)


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
    compression: Literal["lz4", "zstd", "uncompressed"] = "lz4",
    overwrite: bool = False,
) -> None:
    """Generate a synthetic RecFlow release in the official on-disk layout.

    Users, items and a funnel of noisy stage scorers with a known ground truth (see ``docs/data_formats.md``)
    produce ``all_stage/``, ``realshow/``, the three per-day pickles and ``others/`` exactly as the public
    release lays them out. The last day is the test day. About ``13 + 4 * stage_samples`` rows are logged per
    request.

    Args:
        out: Directory to write the release into (created).
        users: Number of users.
        days: Number of days to write (the last one is the test day).
        seed: Random seed; the output depends only on the arguments.
        items: Number of videos; default ``max(2000, 20 * users, 4 * retrieved)``.
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
        compression: Compression of the Feather files (pandas writes lz4 by default).
        overwrite: Replace ``out`` if it exists.
    """
    if users < 1 or days < 1 or history_days < 0:
        raise ValueError("users and days must be >= 1 and history_days >= 0")
    funnel = _Funnel(retrieved, prerank_keep, coarse_keep, rank_keep, stage_samples, oversize_exposure_rate)
    funnel.validate()
    items = items if items is not None else max(2000, 20 * users, 4 * retrieved)
    root = Path(out)
    if root.exists():
        if not overwrite and any(root.iterdir()):
            raise FileExistsError(f"{root} exists and is not empty; pass overwrite=True to replace it")
        shutil.rmtree(root)
    root.mkdir(parents=True)

    first_written = parse_date(start_date)
    first_simulated = first_written - dt.timedelta(days=history_days)
    epoch_days = (first_simulated - dt.date(1970, 1, 1)).days
    world = SyntheticWorld.create(users, items, seed)
    catalogue = _Catalogue(world, day_start_seconds(epoch_days))
    simulated: list[_DayRows] = []
    matrices: list[np.ndarray] = []
    events: dict[str, list[np.ndarray]] = {}
    exposed_videos = np.zeros(0, dtype=np.int64)
    next_request_id = 0
    for day in range(history_days + days):
        date = (first_simulated + dt.timedelta(days=day)).isoformat()
        rows = _simulate_day(
            world,
            seed,
            day,
            day_start_seconds(epoch_days + day) * 1000,
            next_request_id,
            requests_per_user_day,
            funnel,
        )
        next_request_id += len(rows.request_user)
        simulated.append(rows)
        matrices.append(catalogue.stage_matrix(rows.row_video, rows.feedback["effective_view"]))
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
        if day < history_days:
            continue
        _write_day(root, date, rows, matrices[-1], world, catalogue, compression)
        seq = _sequences(
            {name: np.concatenate(parts) for name, parts in events.items()}, rows.request_user, rows.request_ms
        )
        ids = rows.request_ids
        _write_pickle({int(rid): seq[i] for i, rid in enumerate(ids)}, root / "seq_effective_50_dict" / f"{date}.pkl")
        _write_ubm(root / "ubm_seq_request_id_dict" / f"{date}.pkl", seq, simulated, matrices)
        exposed = rows.row_stage == STAGE_CODE["realshow"]
        exposed_videos = np.union1d(exposed_videos, rows.row_video[exposed])
        _write_feather(
            pa.table({k: pa.array(v) for k, v in catalogue.columns(exposed_videos).items()}),
            root / "others" / "realshow_video_info_daily" / f"{date}.feather",
            compression,
        )
        if day == history_days + days - 1:
            _write_others(root, rows, world, catalogue, exposed_videos, compression)
        logger.info("synth-recflow: wrote %s (%d requests, %d rows)", date, len(ids), len(rows.row_request))
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
            "category_level_one": 16,
            "upload_type": 6,
        },
        root / "others" / "id_cnt.pkl",
    )


def _write_day(
    root: Path,
    date: str,
    rows: _DayRows,
    matrix: np.ndarray,
    world: SyntheticWorld,
    catalogue: _Catalogue,
    compression: str,
) -> None:
    everything = np.arange(len(rows.row_request))
    _write_feather(
        _all_stage_table(rows, world, catalogue, everything), root / "all_stage" / f"{date}.feather", compression
    )
    exposed = np.flatnonzero(rows.row_stage == STAGE_CODE["realshow"])
    _write_feather(
        _all_stage_table(rows, world, catalogue, exposed), root / "realshow" / f"{date}.feather", compression
    )
    ids = rows.request_ids
    _write_pickle(
        {int(rid): _stage_dict(rows, matrix, i) for i, rid in enumerate(ids)},
        root / "request_id_dict" / f"{date}.pkl",
    )


def _write_ubm(path: Path, seq: np.ndarray, simulated: list[_DayRows], matrices: list[np.ndarray]) -> None:
    valid = seq[:, :, 7] > 0
    referenced = np.unique(seq[:, :, 9][valid])
    firsts = np.array([d.first_request_id for d in simulated])
    day_of = np.searchsorted(firsts, referenced, side="right") - 1
    ubm = {
        int(rid): _stage_dict(simulated[d], matrices[d], int(rid) - simulated[d].first_request_id)
        for rid, d in zip(referenced.tolist(), day_of.tolist(), strict=True)
    }
    _write_pickle(ubm, path)


def _write_others(
    root: Path,
    rows: _DayRows,
    world: SyntheticWorld,
    catalogue: _Catalogue,
    exposed_videos: np.ndarray,
    compression: str,
) -> None:
    others = root / "others"
    stage = rows.row_stage
    exposed = np.flatnonzero(stage == STAGE_CODE["realshow"])
    rank_space = np.flatnonzero(stage <= STAGE_CODE["rank_neg"])
    coarse_space = np.flatnonzero(stage <= STAGE_CODE["coarse_neg"])
    _write_feather(_all_stage_table(rows, world, catalogue, exposed), others / "retrieval_test.feather", compression)
    _write_feather(
        _all_stage_table(rows, world, catalogue, coarse_space), others / "coarse_rank_test.feather", compression
    )
    _write_feather(_all_stage_table(rows, world, catalogue, rank_space), others / "rank_test.feather", compression)
    _write_feather(
        pa.table({k: pa.array(v) for k, v in catalogue.columns(exposed_videos).items()}),
        others / "realshow_video_info.feather",
        compression,
    )
