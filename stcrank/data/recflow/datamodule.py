"""The RecFlow data module: the training days day by day, and the test day as exposures and as stage candidates.

Batches follow the contract of :mod:`stcrank.data.recflow.collate`; sharding under DDP follows
:mod:`stcrank.data.recflow.batching`.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

from stcrank import registry
from stcrank.data.base import BaseDataModule
from stcrank.data.recflow.batching import DayBatches, DayBatchSampler, SampleKind
from stcrank.data.recflow.collate import CandidateDay, ExposureDay
from stcrank.data.recflow.schema import RANK_CANDIDATE_STAGES, STAGE_CODE
from stcrank.data.recflow.store import DayPart, RecFlowStore, StageLists, read_manifest
from stcrank.data.resumable import ResumableDataLoader
from stcrank.plugins import LabelDefinition

logger = logging.getLogger(__name__)

DEFAULT_CHUNK_ROWS = 4_000_000
"""Default bound on the stage rows of the day part a loader holds (about 1/13 of a RecFlow day)."""


def _exposure_count(store: RecFlowStore, day: str, label: LabelDefinition) -> int:
    return ExposureDay.num_rows(store, day, label)


def _exposure_requests(store: RecFlowStore, day: str, label: LabelDefinition) -> np.ndarray:
    return ExposureDay.request_rows(store, day, label)


def _request_count(store: RecFlowStore, day: str, stages: Sequence[str]) -> int:
    return CandidateDay.num_rows(store, day, stages)


def _unit_requests(
    store: RecFlowStore,
    units: Sequence[str | DayPart],
    requests: Callable[[RecFlowStore, str], np.ndarray],
    position: int,
) -> np.ndarray:
    """The request of each sample of a day or day part (for shuffling whole requests)."""
    unit = units[position]
    if isinstance(unit, DayPart):
        return requests(store.part(unit), unit.day)
    return requests(store, unit)


class RecFlowDataModule(BaseDataModule):
    """RecFlow from stcrank's store: exposures for training, exposures and stage candidates for evaluation.

    * **Training** (``sample_kind="exposures"``): the exposures of the training days, day by day in chronological
      order, one pass per epoch, shuffled within each day (seeded, reshuffled every epoch). With
      ``sample_kind="requests"`` the training samples are whole requests with their candidates (the candidates
      batch layout), e.g. for list-wise cascade losses.
    * **Validation** (only when ``val_day`` is set) **and test**: two dataloaders; index 0 holds the day's
      exposures (point-wise: AUC, LogLoss), index 1 the day's requests with their ``candidate_stages`` candidates
      (Recall/NDCG over stage candidates). Nothing is dropped; under DDP each rank reads a disjoint contiguous block.

    Subclasses add sample kinds by extending :meth:`sample_kinds`.

    Args:
        root: The store directory (``stcrank data import-recflow --dst``).
        batch_size: Largest training batch.
        eval_batch_size: Largest evaluation batch (requests, for the candidates loader).
        train_days: Training days; default every day of the store except the test and validation days.
            Always visited in chronological order.
        val_day: Day for validation; none by default (the RecFlow protocol has no validation).
        test_day: Held-out day; default the store's test day.
        label: The label definition (a :class:`~stcrank.plugins.LabelDefinition` or its entry-point name).
        sample_kind: What a training sample is: ``"exposures"`` or ``"requests"`` (or a subclass's own kind).
        candidate_stages: Stages that make up the evaluation candidates; default the ranking stage's inference
            space ``realshow, rerank_pos, rerank_neg, rank_pos, rank_neg`` (add ``coarse_neg`` for coarse ranking).
        max_candidates: At most this many candidates per request (a random subset, counted in the log).
        shuffle_candidates: Put each request's candidates in a seeded random order, so that their position says
            nothing about their stage.
        num_workers: DataLoader workers (each keeps one day part in memory).
        pin_memory: Pin batches in page-locked memory (for GPU training).
        seed: Seed of the within-day shuffles and of the candidate order.
        chunk_rows: Bound on memory: each day is read in parts of consecutive requests holding at most this many
            stage (``all_stage``) rows, and one part is loaded at a time. With several parts per day, training
            visits a day's parts in a seeded random order and shuffles rows within each part (a new permutation
            every epoch); a day that fits in one part is shuffled exactly as a whole day. None loads whole days.
        group_requests: Shuffle whole requests in training: a day's requests in a random order, each with all
            of its samples, so that a training batch holds the samples of fewer requests whose request-level
            features (user, context, behaviour sequence) are gathered and computed once (see the batch's
            ``request_slot``). Faster for networks with per-request work (DIN, DSSM), but the batches are no
            longer independent draws of samples as in the RecFlow protocol. Off by default.
    """

    def __init__(
        self,
        root: str,
        batch_size: int = 1024,
        eval_batch_size: int = 256,
        train_days: list[str] | None = None,
        val_day: str | None = None,
        test_day: str | None = None,
        label: LabelDefinition | str = "effective_view",
        sample_kind: str = "exposures",
        candidate_stages: list[str] | None = None,
        max_candidates: int | None = None,
        shuffle_candidates: bool = True,
        num_workers: int = 0,
        pin_memory: bool = False,
        seed: int = 0,
        chunk_rows: int | None = DEFAULT_CHUNK_ROWS,
        group_requests: bool = False,
    ) -> None:
        super().__init__()
        if chunk_rows is not None and chunk_rows < 1:
            raise ValueError(f"chunk_rows must be >= 1 or None, got {chunk_rows}")
        self.chunk_rows = chunk_rows
        self.root = str(root)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.val_day = val_day
        self.label = registry.resolve("labels", label)
        self.candidate_stages = list(candidate_stages) if candidate_stages is not None else list(RANK_CANDIDATE_STAGES)
        unknown = [stage for stage in self.candidate_stages if stage not in STAGE_CODE]
        if unknown:
            raise ValueError(f"unknown candidate_stages {unknown}; the stages are {list(STAGE_CODE)}")
        if max_candidates is not None and max_candidates < 1:
            raise ValueError(f"max_candidates must be >= 1, got {max_candidates}")
        self.max_candidates = max_candidates
        self.shuffle_candidates = shuffle_candidates
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.seed = seed
        self.group_requests = group_requests
        if sample_kind not in self.sample_kinds():
            raise ValueError(f"unknown sample_kind {sample_kind!r}; choose one of {sorted(self.sample_kinds())}")
        self.sample_kind = sample_kind
        manifest = read_manifest(self.root)
        days = list(manifest["days"])
        self.test_day = test_day or manifest["test_day"]
        held_out = {self.test_day, val_day}
        chosen = train_days if train_days is not None else [d for d in days if d not in held_out]
        for day in [*chosen, self.test_day, *([val_day] if val_day else [])]:
            if day not in days:
                raise ValueError(f"day {day!r} is not in the store {self.root} ({days[0]} .. {days[-1]})")
        if train_days is not None and list(train_days) != sorted(train_days):
            logger.warning("train_days are visited in chronological order, not in the given order")
        self.train_days = sorted(chosen)
        self._store: RecFlowStore | None = None

    # -- what the rest of the toolkit reads ----------------------------------------------------------------------

    @property
    def store(self) -> RecFlowStore:
        """The store (opened on first use)."""
        if self._store is None:
            self._store = RecFlowStore(self.root)
        return self._store

    @property
    def feature_sizes(self) -> dict[str, int]:
        """Embedding-table size of every categorical feature, read from the manifest only (count + 2)."""
        return {name: int(size) for name, size in read_manifest(self.root)["feature_sizes"].items()}

    def sample_kinds(self) -> dict[str, SampleKind]:
        """The kinds of sample this module can train on, by name (extend in subclasses)."""
        return {
            "exposures": SampleKind(
                load=functools.partial(ExposureDay, label=self.label),
                count=functools.partial(_exposure_count, label=self.label),
                requests=functools.partial(_exposure_requests, label=self.label),
            ),
            "requests": self._candidate_kind(),
        }

    def stage_lists(self, day: str, stages: Sequence[str], columns: Sequence[str] = ("video_id",)) -> StageLists:
        """Items of the given stages of every request of ``day`` in CSR form (for stage negative samplers)."""
        return self.store.stage_lists(day, stages, columns)

    def exposed_corpus(self, day: str) -> torch.Tensor:
        """Video ids exposed up to and including ``day``, shifted +1 like the batches (random-negative pool)."""
        return torch.from_numpy(self.store.exposed_corpus(day).astype("int64") + 1)

    def request_sequences(self, day: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Behaviour sequences of ``day``'s requests as in the batches.

        Returns:
            ``(request_id Long[R], seq Long[R, 50, 5] shifted with 0 on padding, seq_mask Bool[R, 50])``.
        """
        from stcrank.data.recflow.collate import RequestFeatures

        features = RequestFeatures.load(self.store, day)
        return features.request_id, features.seq.long(), features.seq_mask

    # -- dataloaders ---------------------------------------------------------------------------------------------

    def _candidate_kind(self) -> SampleKind:
        return SampleKind(
            load=functools.partial(
                CandidateDay,
                label=self.label,
                stages=tuple(self.candidate_stages),
                max_candidates=self.max_candidates,
                shuffle_candidates=self.shuffle_candidates,
            ),
            count=functools.partial(_request_count, stages=tuple(self.candidate_stages)),
        )

    def day_parts(self, days: Sequence[str], shuffle: bool) -> list[list[DayPart]]:
        """The parts of each day (at most ``chunk_rows`` stage rows each), in visiting order.

        Args:
            days: The days.
            shuffle: Visit each day's parts in a random order seeded by ``seed`` and the date (the same every
                epoch: the sampler's interface takes the sizes once), else in request order.
        """
        out = []
        for day in days:
            parts = self.store.day_parts(day, self.chunk_rows)
            if shuffle and len(parts) > 1:
                order = np.random.default_rng([self.seed, int(day.replace("-", ""))]).permutation(len(parts))
                parts = [parts[i] for i in order]
            out.append(parts)
        return out

    def _loader(
        self,
        days: Sequence[str],
        kind: SampleKind,
        batch_size: int,
        shuffle: bool,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> DataLoader:
        if rank is None or world_size is None:
            rank, world_size = self.distributed_rank()
        parts = self.day_parts(days, shuffle)
        if all(len(day_parts) == 1 for day_parts in parts):
            units: list[str | DayPart] = list(days)  # whole days: exactly the unchunked behaviour
            sizes = [kind.count(self.store, day) for day in days]
        else:
            units = [part for day_parts in parts for part in day_parts]
            sizes = [kind.count(self.store.part(part), part.day) for part in units]
        requests = None
        if shuffle and self.group_requests and kind.requests is not None:
            requests = functools.partial(_unit_requests, self.store, units, kind.requests)
        sampler = DayBatchSampler(
            sizes, batch_size, shuffle=shuffle, seed=self.seed, rank=rank, world_size=world_size, requests=requests
        )
        return ResumableDataLoader(
            DayBatches(self.root, units, kind, seed=self.seed),
            batch_size=None,  # the sampler yields whole batches
            sampler=sampler,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=False,
        )

    def train_dataloader(self, rank: int | None = None, world_size: int | None = None) -> DataLoader:
        """The training days, day by day, shuffled within each day.

        Args:
            rank: This process's rank; from the trainer (or torch.distributed) when None.
            world_size: Number of processes; from the trainer (or torch.distributed) when None.
        """
        if not self.train_days:
            raise ValueError(f"no training day in {self.root} (test day {self.test_day}, val day {self.val_day})")
        kind = self.sample_kinds()[self.sample_kind]
        return self._loader(self.train_days, kind, self.batch_size, True, rank, world_size)

    def evaluation_dataloaders(
        self, day: str, rank: int | None = None, world_size: int | None = None
    ) -> list[DataLoader]:
        """The two evaluation loaders of a day: ``[exposures, requests with candidates]``, nothing dropped.

        Args:
            day: The day to evaluate on.
            rank: This process's rank; from the trainer (or torch.distributed) when None.
            world_size: Number of processes; from the trainer (or torch.distributed) when None.
        """
        kinds = self.sample_kinds()
        exposures = self._loader([day], kinds["exposures"], self.eval_batch_size, False, rank, world_size)
        requests = self._loader([day], self._candidate_kind(), self.eval_batch_size, False, rank, world_size)
        return [exposures, requests]

    def val_dataloader(self) -> list[DataLoader]:
        """Validation loaders on ``val_day`` (none when it is not set)."""
        return self.evaluation_dataloaders(self.val_day) if self.val_day else []

    def test_dataloader(self) -> list[DataLoader]:
        """Test loaders on the test day: ``[exposures, requests with candidates]``."""
        return self.evaluation_dataloaders(self.test_day)
