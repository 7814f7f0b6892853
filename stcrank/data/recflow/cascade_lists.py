"""LCRON's cascade benchmark on RecFlow: per request, 40 candidates from four stages with graded relevance.

The protocol, as the reference code (``kwai/LCRON``, two-stage setting) reads the release:

* **Training days** 2024-01-13 to 2024-02-03 (its ``file_1st.txt`` lists 22 days; the last line has no newline, so
  ``wc -l`` counts 21, but Python reads all 22), one pass, day by day; **test day** 2024-02-04 (the last day of the
  first collection period). The paper tunes on 2024-02-03 with training up to 2024-02-02.
* **Candidates**: per request the first 10 items of each of ``rank_pos``, ``rank_neg``, ``coarse_neg`` and
  ``prerank_neg`` (:data:`CASCADE_BLOCKS`): 40 slots, padded where a stage has fewer.
* **Relevance**: ``30 - rank_index`` for the ``rank_pos`` items (their position in the ranking stage), 7 for
  ``rank_neg``, 6 for ``coarse_neg`` and 5 for ``prerank_neg`` (:data:`NEGATIVE_GRADES`). The ground truth of
  the cascade metrics and losses is the top 10 by relevance: the ranking stage's own choice.

:class:`CascadeListDay` builds these lists for one day of the stcrank store; :class:`LCRONDataModule` serves
them: the training days' requests day by day, the test (and validation) day's requests for evaluation.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from stcrank.data.recflow.batching import SampleKind
from stcrank.data.recflow.collate import RequestFeatures, item_matrix
from stcrank.data.recflow.datamodule import DEFAULT_CHUNK_ROWS, RecFlowDataModule
from stcrank.data.recflow.errors import RecFlowFormatError
from stcrank.data.recflow.schema import DAYS_DIR, ITEM_FEATURES, STAGE_CODE, STAGE_PRIORITY
from stcrank.data.recflow.store import RecFlowStore, read_manifest
from stcrank.errors import ConfigError

__all__ = [
    "CASCADE_BATCH_KEYS",
    "CASCADE_BLOCKS",
    "LCRON_TEST_DAY",
    "LCRON_TRAIN_DAYS",
    "MAX_RANK_INDEX",
    "NEGATIVE_GRADES",
    "CascadeListDay",
    "LCRONDataModule",
]

logger = logging.getLogger(__name__)


def _dates(first: str, last: str) -> tuple[str, ...]:
    start, stop = dt.date.fromisoformat(first), dt.date.fromisoformat(last)
    return tuple((start + dt.timedelta(days=i)).isoformat() for i in range((stop - start).days + 1))


LCRON_TRAIN_DAYS: tuple[str, ...] = _dates("2024-01-13", "2024-02-03")
"""The reference's training days (``deep_components/file_1st.txt``)."""

LCRON_TEST_DAY = "2024-02-04"
"""The reference's test day (``run_test2.py``)."""

CASCADE_BLOCKS: tuple[str, ...] = ("rank_pos", "rank_neg", "coarse_neg", "prerank_neg")
"""The stages of the candidate lists, in slot order."""

MAX_RANK_INDEX = 30
"""A ``rank_pos`` item's relevance is ``MAX_RANK_INDEX - rank_index``."""

NEGATIVE_GRADES: dict[str, float] = {"rank_neg": 7.0, "coarse_neg": 6.0, "prerank_neg": 5.0}
"""Relevance of the items of the three negative stages."""

RANK_TOP = 10
"""``positives="rank_top"``: the ranking stage's top items are those with ``rank_index < RANK_TOP``."""

CASCADE_BATCH_KEYS: tuple[str, ...] = (
    "context",
    "user",
    "seq",
    "seq_mask",
    "candidates",
    "candidate_mask",
    "candidate_relevance",
    "candidate_stage",
    "request_id",
)
"""Keys of a cascade-lists batch (one row per request)."""

Positives = Literal["rank_pos", "rank_top"]


def _block_membership(data: dict[str, np.ndarray], positives: Positives) -> list[np.ndarray]:
    """Bool rows of each block; a row belongs to the first block it qualifies for (no item is listed twice)."""
    flags = data["flags"].astype(np.int64)

    def flagged(stage: str) -> np.ndarray:
        return ((flags >> STAGE_CODE[stage]) & 1).astype(bool)

    if positives == "rank_pos":
        top = flagged("rank_pos")
    else:
        rank_index = data["rank_index"]
        top = (rank_index >= 0) & (rank_index < RANK_TOP)
    taken = top.copy()
    members = [top]
    for stage in CASCADE_BLOCKS[1:]:
        member = flagged(stage) & ~taken
        taken |= member
        members.append(member)
    return members


class CascadeListDay:
    """One day's requests, each with its first ``per_block`` items of every stage of :data:`CASCADE_BLOCKS`.

    Rows of this dataset are all the requests of the day (a request without any such item is a row of padding,
    which metrics and losses ignore). Membership of a stage comes from the row's flags (a row carrying several
    flags is listed once, in the first block it qualifies for); within a stage, items come in the store's order
    (the release's file order within each stage).

    Args:
        store: The store (or a view of one day part).
        day: The day.
        per_block: Items taken from each stage.
        positives: ``rank_pos``: the rows flagged ``rank_pos`` (the reference's reading of ``request_id_dict``);
            ``rank_top``: the rows the ranking stage placed in its top 10 (``0 <= rank_index < 10``), whatever
            stage they reached later. On a generated store every row has one flag, and ``rank_pos`` holds only the
            ranking stage's top items that the re-rank dropped (about 6 a request); ``rank_top`` gives all 10.
        shuffle_candidates: Put each request's candidates in a seeded random order, so that a slot says nothing
            about its stage.

    Raises:
        RecFlowFormatError: When a top item's ``rank_index`` is outside ``[0, 22]``: its relevance would not be
            above ``rank_neg``'s 7.
    """

    def __init__(
        self,
        store: RecFlowStore,
        day: str,
        per_block: int = 10,
        positives: Positives = "rank_pos",
        shuffle_candidates: bool = True,
    ) -> None:
        self.requests = RequestFeatures.load(store, day)
        self.shuffle_candidates = shuffle_candidates
        offsets = store.stage_offsets(day)
        n_requests = len(offsets)
        data = store.candidates(day, ["flags", "rank_index", *ITEM_FEATURES])
        request_of = np.repeat(np.arange(n_requests), offsets[:, -1] - offsets[:, 0])
        index = np.full((n_requests, per_block * len(CASCADE_BLOCKS)), -1, dtype=np.int64)
        relevance = np.zeros(index.shape, dtype=np.float32)
        priority = np.zeros(index.shape, dtype=np.int64)
        source = f"{store.root}/{DAYS_DIR}/{day}/candidates.parquet"
        for block, (stage, member) in enumerate(zip(CASCADE_BLOCKS, _block_membership(data, positives), strict=True)):
            rows = np.flatnonzero(member)
            request = request_of[rows]  # non-decreasing: the table is sorted by request
            ordinal = np.arange(len(rows)) - np.searchsorted(request, request, side="left")
            take = ordinal < per_block
            rows, request, column = rows[take], request[take], block * per_block + ordinal[take]
            index[request, column] = rows
            if stage == "rank_pos":
                rank_index = data["rank_index"][rows].astype(np.int64)
                bad = (rank_index < 0) | (rank_index > MAX_RANK_INDEX - 8)
                if bad.any():
                    raise RecFlowFormatError(
                        f"{source}: {int(bad.sum())} ranking-stage top items have rank_index outside "
                        f"[0, {MAX_RANK_INDEX - 8}] (e.g. {int(rank_index[bad][0])}); their relevance "
                        f"{MAX_RANK_INDEX} - rank_index would not rank above rank_neg's {NEGATIVE_GRADES['rank_neg']:g}"
                    )
                relevance[request, column] = MAX_RANK_INDEX - rank_index
            else:
                relevance[request, column] = NEGATIVE_GRADES[stage]
            priority[request, column] = STAGE_PRIORITY[stage]
        # Keep only the rows a slot uses; padding points at one extra all-zero item row.
        used, inverse = np.unique(index[index >= 0], return_inverse=True)
        compact = np.full_like(index, len(used))
        compact[index >= 0] = inverse
        self.padding = len(used)
        self.index = torch.from_numpy(compact)
        self.item = torch.cat([item_matrix({n: data[n][used] for n in ITEM_FEATURES}, source), torch.zeros(1, 8).int()])
        self.relevance = torch.from_numpy(relevance)
        self.priority = torch.from_numpy(priority)

    @staticmethod
    def num_rows(store: RecFlowStore, day: str) -> int:
        """Number of requests of the day (reads one column of the requests table)."""
        return len(store.requests(day, ["request_id"])["request_id"])

    def __len__(self) -> int:
        return len(self.index)

    def batch(self, index: Tensor, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Gather requests ``index`` with their candidate lists.

        Args:
            index: Request rows, ``[B]``.
            generator: Random generator of the candidate order.
        """
        slots = self.index[index]
        relevance, priority = self.relevance[index], self.priority[index]
        if self.shuffle_candidates and slots.numel():
            order = torch.argsort(torch.rand(slots.shape, generator=generator), dim=1)
            slots, relevance, priority = (t.gather(1, order) for t in (slots, relevance, priority))
        mask = slots != self.padding
        out = self.requests.gather(index)
        out["candidates"] = self.item[slots].long()
        out["candidate_mask"] = mask
        out["candidate_relevance"] = relevance * mask
        out["candidate_stage"] = priority * mask
        return {key: out[key] for key in CASCADE_BATCH_KEYS}


def _count(store: RecFlowStore, day: str) -> int:
    return CascadeListDay.num_rows(store, day)


DaysRule = Literal["auto", "release", "store"]


def resolve_days(
    root: str,
    days: DaysRule,
    train_days: list[str] | None,
    test_day: str | None,
    val_day: str | None,
) -> tuple[list[str], str, str]:
    """The training days and test day of the benchmark on a store, and a line saying where they come from.

    Explicit ``train_days`` / ``test_day`` win. Otherwise ``release`` takes LCRON's dates, ``store`` takes the
    store's test day and every earlier day (but ``val_day``) for training, and ``auto`` takes LCRON's dates when the
    store holds all of them, else the store's.

    Raises:
        ConfigError: For ``release`` on a store that lacks some of LCRON's dates, or an unknown rule.
    """
    manifest = read_manifest(root)
    stored = list(manifest["days"])
    if days not in ("auto", "release", "store"):
        raise ConfigError(f"--data.days must be auto, release or store, got {days!r}")
    has_release = all(day in stored for day in (*LCRON_TRAIN_DAYS, LCRON_TEST_DAY))
    if days == "release" and not has_release:
        missing = [day for day in (*LCRON_TRAIN_DAYS, LCRON_TEST_DAY) if day not in stored]
        raise ConfigError(
            f"--data.days release: the store {root} lacks {len(missing)} of LCRON's days ({', '.join(missing[:3])}"
            f"{'...' if len(missing) > 3 else ''}); import them, or pass --data.days store to use the store's "
            "own days, or name them with --data.train_days and --data.test_day"
        )
    use_release = days == "release" or (days == "auto" and has_release)
    test = test_day or (LCRON_TEST_DAY if use_release else str(manifest["test_day"]))
    if train_days is not None:
        train, source = list(train_days), "given"
    elif use_release:
        train, source = list(LCRON_TRAIN_DAYS), "LCRON's dates"
    else:
        train, source = [d for d in stored if d < test and d != val_day], "the store's days"
    line = f"{source}: training {train[0] if train else '-'} .. {train[-1] if train else '-'} ({len(train)} days)"
    return train, test, f"{line}, test {test}"


class LCRONDataModule(RecFlowDataModule):
    """The LCRON benchmark's 40-candidate lists (see the module docstring) from a RecFlow store.

    * **Training**: every request of the training days, day by day in chronological order, one pass per epoch,
      shuffled within each day (seeded).
    * **Validation** (only with ``val_day``) **and test**: one dataloader of the day's requests. Nothing is dropped.

    Batches have :data:`CASCADE_BATCH_KEYS`: the request features of the RecFlow batches, ``candidates
    Long[B, 40, 8]``, ``candidate_mask Bool[B, 40]``, ``candidate_relevance Float[B, 40]`` (the graded relevance,
    0 on padding) and ``candidate_stage Long[B, 40]`` (cascade priority: ``rank_pos`` 4, ``rank_neg`` 3,
    ``coarse_neg`` 2, ``prerank_neg`` 1, padding 0).

    **Days.** By default (``days="auto"``) the benchmark runs on LCRON's dates (training 2024-01-13 to 2024-02-03,
    test 2024-02-04) when the store holds them all, as the imported release does; otherwise (a generated store)
    on the store's own days: its test day, and every earlier day for training. The choice is logged.
    ``days="release"`` insists on LCRON's dates; ``train_days`` and ``test_day`` name days explicitly.

    Args:
        root: The store directory.
        batch_size: Requests per training batch (reference: 1024).
        eval_batch_size: Requests per evaluation batch.
        days: ``auto``, ``release`` or ``store``, see above.
        train_days: Training days (overrides ``days``).
        val_day: Validation day (none by default, as in the reference).
        test_day: Test day (overrides ``days``).
        positives: Which rows are the ranking stage's top items: ``rank_pos`` (flagged so; the reference's
            reading) or ``rank_top`` (``0 <= rank_index < 10``); see :class:`CascadeListDay`.
        per_block: Items per stage (reference: 10).
        shuffle_candidates: Seeded random order of each request's candidates.
        num_workers: DataLoader workers.
        pin_memory: Pin batches in page-locked memory.
        seed: Seed of the within-day shuffles and of the candidate order.
        chunk_rows: Stage rows of the day part loaded at a time (see :class:`RecFlowDataModule`).
    """

    def __init__(
        self,
        root: str,
        batch_size: int = 1024,
        eval_batch_size: int = 1024,
        days: DaysRule = "auto",
        train_days: list[str] | None = None,
        val_day: str | None = None,
        test_day: str | None = None,
        positives: Positives = "rank_pos",
        per_block: int = 10,
        shuffle_candidates: bool = True,
        num_workers: int = 0,
        pin_memory: bool = False,
        seed: int = 0,
        chunk_rows: int | None = DEFAULT_CHUNK_ROWS,
    ) -> None:
        if positives not in ("rank_pos", "rank_top"):
            raise ConfigError(f"--data.positives must be rank_pos or rank_top, got {positives!r}")
        if per_block < 1:
            raise ConfigError(f"--data.per_block must be >= 1, got {per_block}")
        self.positives = positives
        self.per_block = per_block
        chosen_train, chosen_test, self.days_used = resolve_days(str(root), days, train_days, test_day, val_day)
        if not chosen_train:
            raise ConfigError(
                f"no training day before the test day {chosen_test} in the store {root}; pass --data.train_days"
            )
        release = self.days_used.startswith("LCRON's dates")
        (logger.info if release else logger.warning)("LCRON benchmark days (--data.days %s): %s", days, self.days_used)
        super().__init__(
            root=root,
            batch_size=batch_size,
            eval_batch_size=eval_batch_size,
            train_days=chosen_train,
            val_day=val_day,
            test_day=chosen_test,
            sample_kind="cascade_lists",
            shuffle_candidates=shuffle_candidates,
            num_workers=num_workers,
            pin_memory=pin_memory,
            seed=seed,
            chunk_rows=chunk_rows,
        )

    def sample_kinds(self) -> dict[str, SampleKind]:
        """One kind, ``cascade_lists``: the requests with their 40-candidate lists."""
        load = functools.partial(
            CascadeListDay,
            per_block=self.per_block,
            positives=self.positives,
            shuffle_candidates=self.shuffle_candidates,
        )
        return {"cascade_lists": SampleKind(load=load, count=_count)}

    def evaluation_kinds(self, day: str) -> list[SampleKind | str]:
        """One kind: the day's requests with their lists.

        Args:
            day: The day to evaluate on.
        """
        return [self.sample_kinds()["cascade_lists"]]
