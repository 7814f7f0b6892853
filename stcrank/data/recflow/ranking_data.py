"""The RecFlow data module of the coarse-ranking and ranking experiments (stage samples in training, UBM).

It adds three training sample kinds to :class:`~stcrank.data.recflow.datamodule.RecFlowDataModule` (see
:mod:`stcrank.data.recflow.stage_samples`) and, optionally, the competing items of every behaviour to every
batch, training and evaluation alike (see :mod:`stcrank.data.recflow.competing`).
"""

from __future__ import annotations

import functools
from typing import ClassVar

import numpy as np

from stcrank.checks import DATA, check_positive
from stcrank.data.recflow.batching import SampleKind
from stcrank.data.recflow.competing import with_competing
from stcrank.data.recflow.datamodule import (
    DEFAULT_CHUNK_ROWS,
    DEFAULT_MAX_FEATURE_SIZE,
    RecFlowDataModule,
    _exposure_requests,
)
from stcrank.data.recflow.schema import STAGE_CODE
from stcrank.data.recflow.slots import check_slots
from stcrank.data.recflow.stage_samples import AuxiliaryExposureDay, ExtraNegativeDay, RequestListDay
from stcrank.data.recflow.store import RecFlowStore
from stcrank.errors import ConfigError
from stcrank.options import resolve_plugin
from stcrank.plugins import LabelDefinition, NegativeSampler

RANK_LIST_SLOTS: dict[str, int] = {
    "click": 6,
    "realshow": 6,
    "rerank_pos": 10,
    "rerank_neg": 10,
    "rank_pos": 10,
    "rank_neg": 10,
}
"""FS-LTR slots of the ranking stage (52 items); the coarse stage adds ``coarse_neg: 10``."""

AUX_STAGES: tuple[str, ...] = ("rerank_pos", "rerank_neg", "rank_pos", "rank_neg")
"""Stages of the auxiliary ranking items of the ranking stage (10 items each)."""


def _extra_count(store: RecFlowStore, day: str, label: LabelDefinition, sampler: NegativeSampler) -> int:
    return ExtraNegativeDay.num_rows(store, day, label, sampler)


def _list_count(store: RecFlowStore, day: str, slots: dict[str, int]) -> int:
    return RequestListDay.num_rows(store, day, slots)


def _aux_count(store: RecFlowStore, day: str, label: LabelDefinition) -> int:
    return AuxiliaryExposureDay.num_rows(store, day, label)


def _extra_requests(store: RecFlowStore, day: str, label: LabelDefinition, sampler: NegativeSampler) -> np.ndarray:
    return ExtraNegativeDay.request_rows(store, day, label, sampler)


class RecFlowRankingDataModule(RecFlowDataModule):
    """RecFlow for coarse ranking and ranking: exposures, plus stage samples as extra negatives, lists or aux items.

    Training sample kinds (``sample_kind``), besides the parent's ``"exposures"`` and ``"requests"``:

    * ``"extra_negatives"``: the exposures plus, per request, stage rows drawn by ``negative_sampler`` as label
      0 (data distribution shift, RecFlow Tables 4 and 6).
    * ``"request_lists"``: one sample per request, the first items of each slot of ``list_slots`` with their
      cascade priority (``candidate_stage``) and slot code (``candidate_slot``): FS-LTR and PositiveRank
      (Tables 5 and 7).
    * ``"aux_exposures"``: each exposure with the first ``aux_per_stage`` items of each of ``aux_stages`` of its
      request (``aux_items``, ``aux_mask``): the auxiliary ranking loss (Tables 11 and 13).

    With ``competing_stage`` set, every batch (training and evaluation) also carries ``competing`` and
    ``competing_mask``: up to ``competing_size`` items of that stage from the request of each past behaviour
    (Tables 12 and 14).

    Before training, stages that feed the samples (the sampler's for ``"extra_negatives"``, ``aux_stages`` for
    ``"aux_exposures"``) must hold rows on the training days: otherwise the run would silently be the baseline.

    Args:
        root: The store directory.
        batch_size: Largest training batch.
        eval_batch_size: Largest evaluation batch.
        train_days: Training days (default: every day but the test and validation days).
        val_day: Validation day (none by default).
        test_day: Held-out day (default: the store's).
        label: The label definition.
        sample_kind: What a training sample is (see above).
        candidate_stages: Stages of the evaluation candidates (add ``coarse_neg`` for coarse ranking).
        max_candidates: At most this many evaluation candidates per request.
        shuffle_candidates: Seeded random order of each request's evaluation candidates.
        num_workers: DataLoader workers.
        pin_memory: Pin batches in page-locked memory.
        seed: Seed of the shuffles and of the extra-negative draws.
        chunk_rows: Stage rows of the day part loaded at a time (see :class:`RecFlowDataModule`).
        max_feature_size: The largest embedding table (rows) a feature may need (see :class:`RecFlowDataModule`).
        negative_sampler: The stage sampler of ``"extra_negatives"`` (``stage_extra`` with its stages and count).
        list_slots: Slot name -> items of ``"request_lists"`` (default :data:`RANK_LIST_SLOTS`).
        aux_stages: Stages of ``"aux_exposures"`` (default :data:`AUX_STAGES`).
        aux_per_stage: Items taken from the start of each auxiliary stage.
        competing_stage: Stage of the competing items of past behaviours (``rank_pos``); none when None.
        competing_size: Competing items per behaviour.
        group_requests: Shuffle whole requests in training (see :class:`RecFlowDataModule`); for the exposures,
            extra-negatives and auxiliary-exposures kinds.
        test_source: Where the test day's candidates come from: ``auto``, ``official`` or ``stage_rows`` (see
            :class:`RecFlowDataModule`).
    """

    SAMPLE_LAYOUTS: ClassVar[dict[str, str]] = {
        **RecFlowDataModule.SAMPLE_LAYOUTS,
        "extra_negatives": "point-wise",
        "request_lists": "lists",
        "aux_exposures": "auxiliary",
    }

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
        negative_sampler: NegativeSampler | str | None = None,
        list_slots: dict[str, int] | None = None,
        aux_stages: list[str] | None = None,
        aux_per_stage: int = 10,
        competing_stage: str | None = None,
        competing_size: int = 10,
        group_requests: bool = False,
        test_source: str = "auto",
    ) -> None:
        # Set before the parent's constructor: it validates sample_kind through sample_kinds().
        self.negative_sampler = (
            resolve_plugin("negative_samplers", negative_sampler, "--data.negative_sampler")
            if negative_sampler
            else None
        )
        self.list_slots = check_slots(list_slots or RANK_LIST_SLOTS, "list_slots")
        self.aux_stages = list(aux_stages or AUX_STAGES)
        check_positive(type(self).__name__, DATA, aux_per_stage=aux_per_stage, competing_size=competing_size)
        self.aux_slots = check_slots(dict.fromkeys(self.aux_stages, aux_per_stage), "aux_stages")
        if "click" in self.aux_slots or "realshow" in self.aux_slots:
            raise ConfigError(f"--data.aux_stages {self.aux_stages}: must be stage samples (not realshow or click)")
        if competing_stage is not None and competing_stage not in STAGE_CODE:
            raise ConfigError(f"--data.competing_stage {competing_stage}: unknown; the stages are {list(STAGE_CODE)}")
        self.competing_stage = competing_stage
        self.competing_size = competing_size
        if sample_kind == "extra_negatives" and self.negative_sampler is None:
            raise ConfigError(
                "--data.sample_kind extra_negatives needs --data.negative_sampler (e.g. stage_extra with its stages)"
            )
        super().__init__(
            root=root,
            batch_size=batch_size,
            eval_batch_size=eval_batch_size,
            train_days=train_days,
            val_day=val_day,
            test_day=test_day,
            label=label,
            sample_kind=sample_kind,
            candidate_stages=candidate_stages,
            max_candidates=max_candidates,
            shuffle_candidates=shuffle_candidates,
            num_workers=num_workers,
            pin_memory=pin_memory,
            seed=seed,
            chunk_rows=chunk_rows,
            max_feature_size=max_feature_size,
            group_requests=group_requests,
            test_source=test_source,
        )

    def check_training_samples(self) -> None:
        """Refuse extra negatives or auxiliary items drawn from stages without a row on the training days."""
        if self.sample_kind == "extra_negatives":
            stages = list(getattr(self.negative_sampler, "stages", []))
            if stages:
                self.require_stage_rows(stages, "--data.negative_sampler", "extra negatives")
        elif self.sample_kind == "aux_exposures":
            self.require_stage_rows(self.aux_stages, "--data.aux_stages", "auxiliary stage items")

    def _competing(self, kind: SampleKind) -> SampleKind:
        if self.competing_stage is None:
            return kind
        return with_competing(kind, self.competing_stage, self.competing_size)

    def sample_kinds(self) -> dict[str, SampleKind]:
        """The parent's kinds plus ``extra_negatives``, ``request_lists`` and ``aux_exposures``."""
        kinds = dict(super().sample_kinds())
        if self.negative_sampler is not None:
            kinds["extra_negatives"] = SampleKind(
                load=functools.partial(
                    ExtraNegativeDay, label=self.label, sampler=self.negative_sampler, seed=self.seed
                ),
                count=functools.partial(_extra_count, label=self.label, sampler=self.negative_sampler),
                requests=functools.partial(_extra_requests, label=self.label, sampler=self.negative_sampler),
            )
        kinds["request_lists"] = SampleKind(
            load=functools.partial(RequestListDay, label=self.label, slots=self.list_slots),
            count=functools.partial(_list_count, slots=self.list_slots),
        )
        kinds["aux_exposures"] = SampleKind(
            load=functools.partial(AuxiliaryExposureDay, label=self.label, slots=self.aux_slots),
            count=functools.partial(_aux_count, label=self.label),
            requests=functools.partial(_exposure_requests, label=self.label),
        )
        # "requests" is built by _candidate_kind, which already adds the competing items.
        return {name: kind if name == "requests" else self._competing(kind) for name, kind in kinds.items()}

    def _candidate_kind(self) -> SampleKind:
        return self._competing(super()._candidate_kind())

    def _official_candidate_kind(self, name: str) -> SampleKind:
        return self._competing(super()._official_candidate_kind(name))
