"""The RecFlow data module: the training days day by day, and the test day as exposures and as stage candidates.

Batches follow the contract of :mod:`stcrank.data.recflow.collate`; sharding under DDP follows
:mod:`stcrank.data.recflow.batching`.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from typing import ClassVar

import numpy as np
import torch
from torch.utils.data import DataLoader

from stcrank.checks import DATA, check_non_negative, check_positive
from stcrank.data.base import BaseDataModule
from stcrank.data.recflow.batching import DayBatches, DayBatchSampler, SampleKind
from stcrank.data.recflow.collate import CandidateDay, ExposureDay
from stcrank.data.recflow.official_candidates import OfficialCandidateDay, check_label_fits
from stcrank.data.recflow.schema import COARSE_CANDIDATE_STAGES, OTHERS_DIR, RANK_CANDIDATE_STAGES, STAGE_CODE
from stcrank.data.recflow.store import DayPart, RecFlowStore, StageLists, read_manifest
from stcrank.data.resumable import ResumableDataLoader
from stcrank.errors import ConfigError
from stcrank.options import resolve_plugin
from stcrank.plugins import LabelDefinition

logger = logging.getLogger(__name__)

DEFAULT_CHUNK_ROWS = 4_000_000
"""Default bound on the stage rows of the day part a loader holds (about 1/13 of a RecFlow day)."""
DEFAULT_MAX_FEATURE_SIZE = 100_000_000
"""Default number of rows of the largest embedding table a feature may need (3.2 GB of float32 at 8 dimensions).
The release's largest feature, ``video_id``, has about 9M ids."""


def check_feature_sizes(
    sizes: dict[str, int], limit: int, observed_max: dict[str, int], root: str, option: str = "--data.max_feature_size"
) -> None:
    """Refuse feature sizes whose largest table exceeds ``limit`` rows, before anything is allocated.

    Raises:
        ConfigError: Naming the feature, its size, its largest id and the option to raise.
    """
    over = {name: size for name, size in sizes.items() if size > limit}
    if over:
        name, size = max(over.items(), key=lambda item: item[1])
        largest = observed_max.get(name)
        raise ConfigError(
            f"{root}: feature {name!r} needs an embedding table of {size:,} rows"
            + (f" (its largest id is {largest:,})" if largest is not None else "")
            + f", over {option} {limit:,}; an id far beyond the others is usually a corrupt value (check the "
            f"release and re-import), else raise {option}"
        )


def check_held_out_days(train_days: Sequence[str], test_day: str, val_day: str | None, test_day_given: bool) -> None:
    """Refuse overlapping days: a training day twice, the test or validation day among the training days.

    A score on a day the model trained on means nothing. A validation day that is the test day is allowed (a quick
    way to watch the test metrics during training) but logged as a warning: choosing a model or an epoch on the
    test day biases its test score.

    Raises:
        ConfigError: Naming the options and the day.
    """
    test_option = "--data.test_day" if test_day_given else "the store's test day (manifest.json)"
    repeated = sorted({day for day in train_days if list(train_days).count(day) > 1})
    if repeated:
        raise ConfigError(f"--data.train_days repeats {repeated}; give each training day once")
    if test_day in train_days:
        raise ConfigError(
            f"--data.train_days includes the test day {test_day} ({test_option}); a model tested on a day it "
            "trained on gives a meaningless score: leave that day out of --data.train_days"
        )
    if val_day is not None and val_day in train_days:
        raise ConfigError(
            f"--data.train_days includes the validation day {val_day} (--data.val_day); leave it out of one of them"
        )
    if val_day is not None and val_day == test_day:
        logger.warning(
            "--data.val_day is the test day %s (%s): the validation metrics are test metrics, and choosing a model "
            "or an epoch on them biases the test score",
            test_day,
            test_option,
        )


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


def _official_request_count(store: RecFlowStore, day: str, name: str) -> int:
    return OfficialCandidateDay.num_rows(store, day, name)


TEST_SOURCES: tuple[str, ...] = ("auto", "official", "stage_rows")
"""Choices of ``--data.test_source``."""

OFFICIAL_TEST_OF_STAGES: dict[frozenset[str], str] = {
    frozenset(RANK_CANDIDATE_STAGES): "rank_test",
    frozenset(COARSE_CANDIDATE_STAGES): "coarse_rank_test",
}
"""The official test file that holds the candidates of each stage's inference space."""


class RecFlowDataModule(BaseDataModule):
    """RecFlow from stcrank's store: exposures for training, exposures and stage candidates for evaluation.

    * **Training** (``sample_kind="exposures"``): the exposures of the training days, day by day in chronological
      order, one pass per epoch, shuffled within each day (seeded, reshuffled every epoch). With
      ``sample_kind="requests"`` the training samples are whole requests with their candidates (the candidates
      batch layout), e.g. for list-wise cascade losses.
    * **Validation** (only when ``val_day`` is set) **and test**: two dataloaders; index 0 holds the day's
      exposures (point-wise: AUC, LogLoss), index 1 the day's requests with their ``candidate_stages`` candidates
      (Recall/NDCG over stage candidates). Nothing is dropped; under DDP each rank reads a disjoint contiguous block.
      The test day's candidates come from the official test file of the candidate stages (``others/rank_test``
      for the ranking stages, ``others/coarse_rank_test`` with ``coarse_neg``) when the store holds it, else from
      the day's stage rows (``test_source``); the source used is logged and recorded as the hyperparameter
      ``test_candidates_source``. Validation on the test day uses the same candidates as the test.
    * **Predict**: the test day's requests with their ``candidate_stages`` candidates (what a ranker scores for
      re-ranking); ``stcrank predict`` writes one row per candidate.

    Training refuses a sample kind that yields no sample on the training days (:class:`~stcrank.errors.ConfigError`)
    rather than training nothing.

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
        max_feature_size: The largest embedding table (rows) a feature may need; a store whose ids need a larger
            one is refused when the sizes are read, before any model allocates it (one corrupt id of 10**9 would
            otherwise ask for tens of GB). Rows times the embedding dimension times 4 bytes is the table's memory.
        group_requests: Shuffle whole requests in training: a day's requests in a random order, each with all
            of its samples, so that a training batch holds the samples of fewer requests whose request-level
            features (user, context, behaviour sequence) are gathered and computed once (see the batch's
            ``request_slot``). Faster for networks with per-request work (DIN, DSSM), but the batches are no
            longer independent draws of samples as in the RecFlow protocol. Off by default.
        test_source: Where the test day's stage candidates come from: ``official`` (the imported official test
            file of the candidate stages: rank_test or coarse_rank_test), ``stage_rows`` (the test day's stage
            rows of ``candidate_stages``), or ``auto`` (official when the store holds that file for its own test
            day and the label can be computed from it, else stage rows). The official file is loaded whole
            (``chunk_rows`` does not split it).
    """

    SAMPLE_LAYOUTS: ClassVar[dict[str, str]] = {"exposures": "point-wise", "requests": "lists"}

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
        max_feature_size: int = DEFAULT_MAX_FEATURE_SIZE,
        group_requests: bool = False,
        test_source: str = "auto",
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        if test_source not in TEST_SOURCES:
            raise ConfigError(f"--data.test_source {test_source}: unknown; choose one of {list(TEST_SOURCES)}")
        self.test_source = test_source
        self.test_candidates_source: str | None = None
        check_positive(owner, DATA, batch_size=batch_size, eval_batch_size=eval_batch_size, chunk_rows=chunk_rows)
        check_positive(owner, DATA, max_candidates=max_candidates, max_feature_size=max_feature_size)
        check_non_negative(owner, DATA, num_workers=num_workers)
        self.max_feature_size = max_feature_size
        self.chunk_rows = chunk_rows
        self.root = str(root)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.val_day = val_day
        self.label = resolve_plugin("labels", label, "--data.label")
        self.candidate_stages = list(candidate_stages) if candidate_stages is not None else list(RANK_CANDIDATE_STAGES)
        unknown = [stage for stage in self.candidate_stages if stage not in STAGE_CODE]
        if unknown:
            raise ConfigError(f"--data.candidate_stages: unknown stages {unknown}; the stages are {list(STAGE_CODE)}")
        self.max_candidates = max_candidates
        self.shuffle_candidates = shuffle_candidates
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.seed = seed
        self.group_requests = group_requests
        if sample_kind not in self.sample_kinds():
            kinds = sorted(self.sample_kinds())
            raise ConfigError(
                f"--data.sample_kind {sample_kind}: unknown for {type(self).__name__}; choose one of {kinds}"
            )
        self.sample_kind = sample_kind
        manifest = read_manifest(self.root)
        days = list(manifest["days"])
        self.test_day = test_day or manifest["test_day"]
        held_out = {self.test_day, val_day}
        chosen = train_days if train_days is not None else [d for d in days if d not in held_out]
        given = [("--data.train_days", day) for day in chosen] + [("--data.test_day", self.test_day)]
        for option, day in [*given, *([("--data.val_day", val_day)] if val_day else [])]:
            if day not in days:
                raise ConfigError(
                    f"{option} {day}: no such day in the store {self.root} (it has {days[0]} .. {days[-1]})"
                )
        check_held_out_days(chosen, self.test_day, val_day, test_day_given=test_day is not None)
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
        """Embedding-table size of every categorical feature, read from the manifest only (count + 2).

        Raises:
            ConfigError: If a feature needs a table of more than ``max_feature_size`` rows (naming the feature,
                its largest id and ``--data.max_feature_size``).
        """
        manifest = read_manifest(self.root)
        sizes = {name: int(size) for name, size in manifest["feature_sizes"].items()}
        check_feature_sizes(sizes, self.max_feature_size, manifest.get("observed_max_id", {}), self.root)
        return sizes

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
        loader = ResumableDataLoader(
            DayBatches(self.root, units, kind, seed=self.seed),
            batch_size=None,  # the sampler yields whole batches
            sampler=sampler,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=False,
        )
        # Besides the sampler's own settings, these fix what a training epoch holds (checked when a run resumes).
        loader.settings = {
            "--data.sample_kind": self.sample_kind,
            "--data.train_days": list(self.train_days),
            "--data.chunk_rows": self.chunk_rows,
            "--data.group_requests": self.group_requests,
        }
        return loader

    def train_dataloader(self, rank: int | None = None, world_size: int | None = None) -> DataLoader:
        """The training days, day by day, shuffled within each day.

        Args:
            rank: This process's rank; from the trainer (or torch.distributed) when None.
            world_size: Number of processes; from the trainer (or torch.distributed) when None.
        """
        if not self.train_days:
            raise ConfigError(
                f"{self.root}: no training day left (test day {self.test_day}, val day {self.val_day}); set "
                "--data.train_days or import more days"
            )
        self.check_training_samples()
        kind = self.sample_kinds()[self.sample_kind]
        loader = self._loader(self.train_days, kind, self.batch_size, True, rank, world_size)
        if sum(loader.sampler.day_sizes) == 0:
            raise ConfigError(
                f"--data.sample_kind {self.sample_kind} yields no training sample on {self.train_days} of {self.root}"
            )
        return loader

    def check_training_samples(self) -> None:
        """Refuse settings whose training samples would not be what they say (subclasses add their checks)."""

    def stage_rows(self, days: Sequence[str], stages: Sequence[str]) -> int:
        """Number of stage rows of ``stages`` over ``days`` (from the per-request stage counts alone)."""
        codes = [STAGE_CODE[stage] for stage in stages if stage in STAGE_CODE]
        if not codes:
            return 0
        return sum(int(self.store.requests(day, ["stage_count"])["stage_count"][:, codes].sum()) for day in days)

    def require_stage_rows(self, stages: Sequence[str], option: str, what: str) -> None:
        """Refuse stages that hold no row on the training days (the samples built from them would be empty).

        Args:
            stages: The stages.
            option: The option that chose them (``--data.negative_sampler``).
            what: What the stages provide (``extra negatives``).
        """
        if self.stage_rows(self.train_days, stages) > 0:
            return
        present = [stage for stage in STAGE_CODE if self.stage_rows(self.train_days, [stage]) > 0]
        raise ConfigError(
            f"{option}: the stages {list(stages)} hold no row on the training days {self.train_days} of {self.root}, "
            f"so there would be no {what} (a run equal to the baseline); the store has rows of {present}"
        )

    def evaluation_kinds(self, day: str) -> list[SampleKind | str]:
        """What each evaluation loader of a day reads, in order: ``[exposures, requests with candidates]``.

        An entry is a sample kind read from the day's stage rows, or the name of an official test file read whole
        (the test day's candidates when :meth:`official_test_name` names one). Subclasses that evaluate on other
        samples override this.

        Args:
            day: The day to evaluate on.
        """
        kinds = self.sample_kinds()
        official = self.official_test_name() if day == self.test_day else None
        return [kinds["exposures"], self._candidate_kind() if official is None else official]

    def evaluation_dataloaders(
        self, day: str, rank: int | None = None, world_size: int | None = None
    ) -> list[DataLoader]:
        """One loader per entry of :meth:`evaluation_kinds` on the day, nothing dropped.

        Args:
            day: The day to evaluate on.
            rank: This process's rank; from the trainer (or torch.distributed) when None.
            world_size: Number of processes; from the trainer (or torch.distributed) when None.
        """
        return [
            self._official_loader(kind, rank, world_size)
            if isinstance(kind, str)
            else self._loader([day], kind, self.eval_batch_size, False, rank, world_size)
            for kind in self.evaluation_kinds(day)
        ]

    def official_test_name(self) -> str | None:
        """The official test file the test day's candidates come from, or None for the stage rows.

        Decides ``test_source`` once, logs the choice and records it as :attr:`test_candidates_source` (and as the
        loggers' hyperparameter ``test_candidates_source``).

        Raises:
            ConfigError: With ``--data.test_source official`` when no official file can be used, saying why.
        """
        name, reason = self._official_test_choice()
        if name is None and self.test_source == "official":
            raise ConfigError(f"--data.test_source official: {reason}; use --data.test_source stage_rows")
        if name is None:
            source = "stage_rows"
            logger.info("test candidates: the stage rows %s of %s (%s)", self.candidate_stages, self.test_day, reason)
        else:
            source = f"official {name} ({OTHERS_DIR}/{name}.parquet)"
            logger.info("test candidates: the official test file %s/%s.parquet of %s", OTHERS_DIR, name, self.root)
        if source != self.test_candidates_source:
            self.test_candidates_source = source
            trainer = getattr(self, "trainer", None)
            for experiment_logger in getattr(trainer, "loggers", None) or []:
                experiment_logger.log_hyperparams({"test_candidates_source": source})
        return name

    def _official_test_choice(self) -> tuple[str | None, str]:
        """``(official file, "")`` when it can be used, else ``(None, why not)``."""
        if self.test_source == "stage_rows":
            return None, "--data.test_source stage_rows"
        name = OFFICIAL_TEST_OF_STAGES.get(frozenset(self.candidate_stages))
        if name is None:
            return None, (
                f"--data.candidate_stages {self.candidate_stages} are not the candidates of an official test file "
                f"(rank_test: {list(RANK_CANDIDATE_STAGES)}; coarse_rank_test: {list(COARSE_CANDIDATE_STAGES)})"
            )
        manifest = read_manifest(self.root)
        if name not in manifest.get("official_tests", {}):
            return None, f"the store {self.root} holds no official {name} (the release had no others/{name}.feather)"
        if self.test_day != manifest["test_day"]:
            return None, (
                f"--data.test_day {self.test_day} is not the store's test day {manifest['test_day']}, the day of "
                f"the official {name}"
            )
        unfit = check_label_fits(self.store, name, self.label)
        if unfit is not None:
            return None, f"official {name}: {unfit}"
        return name, ""

    def _official_candidate_kind(self, name: str) -> SampleKind:
        """The candidates of the official test file ``name`` (subclasses add to its batches, as to stage rows)."""
        return SampleKind(
            load=functools.partial(
                OfficialCandidateDay,
                label=self.label,
                name=name,
                max_candidates=self.max_candidates,
                shuffle_candidates=self.shuffle_candidates,
            ),
            count=functools.partial(_official_request_count, name=name),
        )

    def _official_loader(self, name: str, rank: int | None, world_size: int | None) -> DataLoader:
        if rank is None or world_size is None:
            rank, world_size = self.distributed_rank()
        kind = self._official_candidate_kind(name)
        # The file is one unit: it is not split into parts of the day.
        sizes = [kind.count(self.store, self.test_day)]
        sampler = DayBatchSampler(
            sizes, self.eval_batch_size, shuffle=False, seed=self.seed, rank=rank, world_size=world_size
        )
        return ResumableDataLoader(
            DayBatches(self.root, [self.test_day], kind, seed=self.seed),
            batch_size=None,
            sampler=sampler,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=False,
        )

    def val_dataloader(self) -> list[DataLoader]:
        """Validation loaders on ``val_day`` (none when it is not set)."""
        return self.evaluation_dataloaders(self.val_day) if self.val_day else []

    def test_dataloader(self) -> list[DataLoader]:
        """Test loaders on the test day: ``[exposures, requests with candidates]``."""
        return self.evaluation_dataloaders(self.test_day)

    def predict_dataloader(self) -> DataLoader:
        """The test day's requests with their ``candidate_stages`` candidates, nothing dropped."""
        return self._loader([self.test_day], self._candidate_kind(), self.eval_batch_size, False)
