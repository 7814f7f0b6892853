"""The ground truth behind a generated store's funnel: how much each stage's items are really liked.

The RecFlow methods rest on an assumption about the funnel: items that went further are better for the user,
and every stage sample is better than a random item (FS-LTR's priority order puts ``prerank_neg`` above the
random negatives; hard-negative mining takes stage samples as *harder* than random ones). On a store generated
by :func:`~stcrank.data.recflow.synth.synth_recflow` that assumption can be checked against the known truth:
:func:`stage_truth` gives the mean true affinity and effective-view probability of each stage's logged items
next to those of random items of the exposed corpus (the retrieval experiments' random negatives), for the
same requests' users.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from stcrank.data.recflow.schema import STAGES
from stcrank.data.recflow.store import RecFlowStore
from stcrank.data.recflow.world import SyntheticWorld

RANDOM = "random"
"""Name of the row of random exposed-corpus items in :func:`stage_truth`."""


@dataclass(frozen=True)
class StageTruth:
    """Mean ground truth of one stage's logged items.

    Attributes:
        stage: A stage name of :data:`~stcrank.data.recflow.schema.STAGES`, or :data:`RANDOM`.
        rows: Number of (request, item) pairs averaged.
        affinity: Mean true affinity of the request's user for the item.
        effective_view: Mean probability that an exposure of the item to that user is an effective view.
    """

    stage: str
    rows: int
    affinity: float
    effective_view: float


def _check_world(store: RecFlowStore, world: SyntheticWorld, day: str, users: np.ndarray, items: np.ndarray) -> None:
    if len(users) and int(users.max()) >= world.n_users:
        raise ValueError(
            f"{store.root} day {day}: user_id {int(users.max())} is outside the world's {world.n_users} users; "
            "pass the SyntheticWorld the store was generated from"
        )
    if len(items) and int(items.max()) >= world.n_items:
        raise ValueError(
            f"{store.root} day {day}: video_id {int(items.max())} is outside the world's {world.n_items} items; "
            "pass the SyntheticWorld the store was generated from"
        )


def stage_truth(
    store: RecFlowStore,
    world: SyntheticWorld,
    days: Sequence[str] | None = None,
    random_per_request: int = 50,
    seed: int = 0,
) -> list[StageTruth]:
    """Mean true affinity and effective-view probability of each stage's items and of random corpus items.

    Args:
        store: A store imported from a release that ``synth_recflow`` generated.
        world: The world it was generated from (same users, items and seed).
        days: Days to average over (default: the training days).
        random_per_request: Random items drawn per request, uniformly from the exposed corpus accumulated up to
            the day (as the retrieval experiments' uniform negatives).
        seed: Seed of the random items.

    Returns:
        One entry per stage present in the days, in funnel order, then the random items' entry.

    Raises:
        ValueError: When an id is outside the world (the store was not generated from it).
    """
    rng = np.random.default_rng(seed)
    sums = np.zeros((len(STAGES) + 1, 3))  # rows, affinity, effective view; the last row is RANDOM
    corpus = np.zeros(0, dtype=np.int64)
    for day in days if days is not None else store.train_days:
        offsets = store.stage_offsets(day)
        users = store.requests(day, ["user_id"])["user_id"].astype(np.int64)
        items = store.candidates(day, ["video_id"])["video_id"].astype(np.int64)
        counts = np.diff(offsets, axis=1)  # [R, 8]: rows of each stage code per request
        row_user = np.repeat(users, counts.sum(axis=1))
        row_stage = np.repeat(np.tile(np.arange(counts.shape[1]), len(users)), counts.reshape(-1))
        _check_world(store, world, day, users, items)
        affinity = world.affinity(row_user, items).astype(np.float64)
        view = world.effective_view_probability(row_user, items).astype(np.float64)
        known = row_stage < len(STAGES)
        np.add.at(sums[:, 0], row_stage[known], 1.0)
        np.add.at(sums[:, 1], row_stage[known], affinity[known])
        np.add.at(sums[:, 2], row_stage[known], view[known])
        corpus = np.union1d(corpus, store.exposed_corpus(day).astype(np.int64))
        if random_per_request > 0 and len(users) and len(corpus):
            drawn = corpus[rng.integers(0, len(corpus), (len(users), random_per_request))]
            user_grid = np.broadcast_to(users[:, None], drawn.shape)
            sums[-1] += (
                drawn.size,
                float(world.affinity(user_grid, drawn).sum()),
                float(world.effective_view_probability(user_grid, drawn).sum()),
            )
    names = [*STAGES, RANDOM]
    return [StageTruth(names[i], int(n), float(a / n), float(v / n)) for i, (n, a, v) in enumerate(sums) if n > 0]


def stage_truth_markdown(rows: Sequence[StageTruth]) -> str:
    """A Markdown table of :func:`stage_truth`'s result, stages ranked as logged.

    Args:
        rows: The result of :func:`stage_truth`.

    Returns:
        The table, with a column saying whether each stage's items are better than random ones.
    """
    random = next((r for r in rows if r.stage == RANDOM), None)
    lines = [
        "| Items | Rows | Mean true affinity | Mean P(effective view) | Better than random items |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        better = "" if random is None or row is random else ("yes" if row.affinity > random.affinity else "**no**")
        name = "random (exposed corpus)" if row.stage == RANDOM else row.stage
        lines.append(f"| {name} | {row.rows:,} | {row.affinity:+.3f} | {row.effective_view:.3f} | {better} |")
    return "\n".join(lines)
