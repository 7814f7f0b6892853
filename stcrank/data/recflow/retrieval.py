"""RecFlow retrieval data: positives with sampled negatives for training, requests with positives for evaluation.

**Training batch** (sample kind ``"retrieval"``; one row per effective view of a training day; ids shifted +1,
0 = padding):

=================  ==============  =============================================================================
key                shape, dtype    content
=================  ==============  =============================================================================
``seq``            Long[B, 50]     video ids of the last 50 effective views (left-padded, most recent last)
``seq_mask``       Bool[B, 50]     True on real behaviours
``items``          Long[B, 1+N]    the target (column 0), then the ``N`` sampled negatives
``item_priority``  Long[B, 1+N]    cascade priority: 6 for the target, the sampler's priority for negatives
                                   (0 random, 1 prerank_neg ... 5 realshow/exposure_neg)
``item_mask``      Bool[B, 1+N]    False where the sampler could not draw (e.g. an empty stage)
``label``          Float[B, 1+N]   1 on the target, 0 on the negatives
``request_id``     Long[B]         raw request id
=================  ==============  =============================================================================

**Evaluation batch** (one row per request of the day with at least one positive exposure): ``seq``,
``seq_mask`` and ``request_id`` as above, plus ``positives`` Long[B, P] (video ids of the request's exposures
with a positive label, 0 on padding) and ``positive_mask`` Bool[B, P]. Requests without a positive add nothing to
RecFlow's retrieval Recall/NDCG (both are averaged over positives), so they are left out.

Negatives are drawn in the batch function with the batch's seeded generator, so a run is reproducible and does
not depend on the number of workers.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from stcrank.data.recflow.batching import SampleKind
from stcrank.data.recflow.collate import compute_labels
from stcrank.data.recflow.datamodule import DEFAULT_CHUNK_ROWS, DEFAULT_MAX_FEATURE_SIZE, RecFlowDataModule
from stcrank.data.recflow.schema import CLICK_PRIORITY, FEEDBACK_COLUMNS, STAGE_CODE
from stcrank.data.recflow.store import RecFlowStore
from stcrank.options import resolve_plugin
from stcrank.plugins import LabelDefinition, NegativeSampler

__all__ = [
    "EVAL_BATCH_KEYS",
    "TRAIN_BATCH_KEYS",
    "RecFlowRetrievalDataModule",
    "RetrievalEvalDay",
    "RetrievalTrainDay",
    "pad_lists",
]

TRAIN_BATCH_KEYS: tuple[str, ...] = ("seq", "seq_mask", "items", "item_priority", "item_mask", "label", "request_id")
"""Keys of a retrieval training batch."""

EVAL_BATCH_KEYS: tuple[str, ...] = ("seq", "seq_mask", "positives", "positive_mask", "request_id")
"""Keys of a retrieval evaluation batch."""

EXPOSURE_NEG = "exposure_neg"
"""Pool of a request's exposures without an effective view."""


def pad_lists(offsets: Tensor, values: Tensor, rows: Tensor) -> tuple[Tensor, Tensor]:
    """Gather CSR lists of ``rows`` into a right-padded matrix.

    Args:
        offsets: Long ``[R + 1]``; list ``r`` is ``values[offsets[r]:offsets[r + 1]]``.
        values: ``[offsets[-1]]``.
        rows: Long ``[B]`` list indices.

    Returns:
        ``(matrix [B, W], mask [B, W])`` with ``W`` the longest list of the batch; 0 on padding.
    """
    counts = offsets[rows + 1] - offsets[rows]
    width = int(counts.max()) if len(rows) else 0
    slots = torch.arange(width).expand(len(rows), width)
    mask = slots < counts[:, None]
    index = torch.where(mask, offsets[rows][:, None] + slots, 0)
    matrix = values[index] if values.numel() else torch.zeros(len(rows), width, dtype=values.dtype)
    return matrix.masked_fill(~mask, 0), mask


def _csr(owner: np.ndarray, values: np.ndarray, rows: int) -> tuple[Tensor, Tensor]:
    """CSR ``(offsets [rows + 1], values)`` of ``values`` grouped by ``owner`` (stable within a row)."""
    order = np.argsort(owner, kind="stable")
    counts = np.bincount(owner, minlength=rows)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return torch.from_numpy(offsets), torch.from_numpy(np.asarray(values[order], dtype=np.int64))


def _sequences(store: RecFlowStore, day: str) -> tuple[Tensor, Tensor, Tensor]:
    """``(request_id Long[R], seq Long[R, 50] shifted with 0 on padding, seq_mask Bool[R, 50])`` of a day."""
    request_id, columns, valid = store.sequences(day, ["video_id"])
    seq = (columns["video_id"].astype(np.int64) + 1) * valid
    return torch.from_numpy(request_id.astype(np.int64)), torch.from_numpy(seq), torch.from_numpy(valid)


def _positive_exposures(store: RecFlowStore, day: str, label: LabelDefinition) -> dict[str, np.ndarray]:
    """``request_row`` and ``video_id`` of the day's exposures with a positive label (inside its mask)."""
    data = store.exposures(day, ["request_row", "video_id", *FEEDBACK_COLUMNS])
    target, keep = compute_labels(label, {n: data[n] for n in FEEDBACK_COLUMNS}, f"{store.root}/{day}/exposures")
    positive = (keep & (target > 0)).numpy()
    return {"request_row": data["request_row"][positive].astype(np.int64), "video_id": data["video_id"][positive]}


class RetrievalTrainDay:
    """One training day: its positives, its exposed corpus and the stage lists the sampler needs.

    Args:
        store: The store.
        day: The day.
        label: The label definition (its positives are the training examples).
        sampler: The negative sampler.
        pool_names: Pools to hand the sampler: ``"corpus"``, stage names, ``"exposure_neg"``.
    """

    def __init__(
        self,
        store: RecFlowStore,
        day: str,
        label: LabelDefinition,
        sampler: NegativeSampler,
        pool_names: Sequence[str] = ("corpus",),
    ) -> None:
        self.sampler = sampler
        self.request_id, self.seq, self.seq_mask = _sequences(store, day)
        positives = _positive_exposures(store, day, label)
        self.request_row = torch.from_numpy(positives["request_row"])
        self.target = torch.from_numpy(positives["video_id"].astype(np.int64) + 1)
        self.corpus = torch.from_numpy(store.exposed_corpus(day).astype(np.int64) + 1)
        self.pools = self._stage_pools(store, day, [name for name in pool_names if name != "corpus"])

    def _stage_pools(self, store: RecFlowStore, day: str, names: list[str]) -> dict[str, tuple[Tensor, Tensor]]:
        unknown = [name for name in names if name not in STAGE_CODE and name != EXPOSURE_NEG]
        if unknown:
            raise ValueError(f"unknown negative pools {unknown}; choose from corpus, {list(STAGE_CODE)}, exposure_neg")
        if not names:
            return {}
        stages = sorted({"realshow" if name == EXPOSURE_NEG else name for name in names})
        lists = store.stage_lists(day, stages, columns=("video_id", "effective_view"))
        owner = np.repeat(np.arange(len(lists.request_id)), lists.counts())
        stage, video = lists.columns["stage"], lists.columns["video_id"].astype(np.int64) + 1
        pools = {}
        for name in names:
            if name == EXPOSURE_NEG:
                keep = (stage == STAGE_CODE["realshow"]) & (lists.columns["effective_view"] == 0)
            else:
                keep = stage == STAGE_CODE[name]
            pools[name] = _csr(owner[keep], video[keep], len(lists.request_id))
        return pools

    @staticmethod
    def num_rows(store: RecFlowStore, day: str, label: LabelDefinition) -> int:
        """Number of training examples of a day (exposures with a positive label)."""
        return len(_positive_exposures(store, day, label)["video_id"])

    def __len__(self) -> int:
        return len(self.target)

    def batch(self, index: Tensor, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Gather the examples ``index`` and draw their negatives with ``generator``."""
        generator = generator if generator is not None else torch.Generator().manual_seed(0)
        rows = self.request_row[index]
        targets = self.target[index]
        pools: dict[str, Tensor] = {"corpus": self.corpus}
        for name, (offsets, values) in self.pools.items():
            pools[name] = pad_lists(offsets, values, rows)[0]
        negatives = self.sampler.sample(pools, targets, generator)
        size = len(index)
        if negatives.items.shape[0] != size:
            raise ValueError(f"{type(self.sampler).__name__} returned {negatives.items.shape[0]} rows for {size}")
        items = torch.cat([targets[:, None], negatives.items.long()], dim=1)
        priority = torch.cat([torch.full((size, 1), CLICK_PRIORITY), negatives.priority.long()], dim=1)
        mask = torch.cat([torch.ones(size, 1, dtype=torch.bool), negatives.mask.bool()], dim=1)
        label = torch.zeros(items.shape, dtype=torch.float32)
        label[:, 0] = 1.0
        return {
            "seq": self.seq[rows],
            "seq_mask": self.seq_mask[rows],
            "items": items.masked_fill(~mask, 0),
            "item_priority": priority.masked_fill(~mask, 0),
            "item_mask": mask,
            "label": label,
            "request_id": self.request_id[rows],
        }


class RetrievalEvalDay:
    """One evaluation day: the requests with at least one positive exposure and their positives.

    Args:
        store: The store.
        day: The day.
        label: The label definition (exposures with a positive label are the positives).
    """

    def __init__(self, store: RecFlowStore, day: str, label: LabelDefinition) -> None:
        self.request_id, self.seq, self.seq_mask = _sequences(store, day)
        positives = _positive_exposures(store, day, label)
        self.offsets, self.positives = _csr(positives["request_row"], positives["video_id"] + 1, len(self.request_id))
        self.rows = torch.from_numpy(np.flatnonzero(np.diff(self.offsets.numpy()) > 0))

    @staticmethod
    def num_rows(store: RecFlowStore, day: str, label: LabelDefinition) -> int:
        """Number of requests of a day with at least one positive exposure."""
        return len(np.unique(_positive_exposures(store, day, label)["request_row"]))

    def __len__(self) -> int:
        return len(self.rows)

    def batch(self, index: Tensor, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Gather the requests ``index`` (``generator`` is unused: evaluation batches are deterministic)."""
        rows = self.rows[index]
        positives, mask = pad_lists(self.offsets, self.positives, rows)
        return {
            "seq": self.seq[rows],
            "seq_mask": self.seq_mask[rows],
            "positives": positives,
            "positive_mask": mask,
            "request_id": self.request_id[rows],
        }


class RecFlowRetrievalDataModule(RecFlowDataModule):
    """RecFlow for the retrieval stage (SASRec): sampled-negative training and full-corpus evaluation.

    * **Training** (``sample_kind="retrieval"``): every effective view of the training days, day by day in
      chronological order, shuffled within each day; each example carries its target and the
      ``negative_sampler``'s negatives, drawn from the day's accumulated exposed corpus and, for stage samplers,
      from the stage lists of the example's request (see the module docstring for the batch layout).
    * **Validation** (when ``val_day`` is set) **and test**: one dataloader of the day's requests that have a
      positive exposure, nothing dropped; the corpus to retrieve from is :meth:`retrieval_corpus`.
    * **Predict**: the test day's requests, as for the test; ``stcrank predict`` writes each one's retrieved list.

    Before training, the stage pools a stage sampler draws from must hold rows on the training days (else its
    stage negatives would all be missing and the run would be the uniform baseline).

    Args:
        root: The store directory (``stcrank data import-recflow --dst``).
        batch_size: Largest training batch (RecFlow: 4096).
        eval_batch_size: Largest evaluation batch, in requests.
        negative_sampler: A ``stcrank.negative_samplers`` plugin (name, or class with ``init_args``).
        train_days: Training days; default every day of the store except the test and validation days.
        val_day: Day for validation; none by default (the RecFlow protocol has no validation).
        test_day: Held-out day; default the store's test day.
        label: The label definition whose positives are the training examples and evaluation targets.
        sample_kind: ``"retrieval"`` (or a parent kind: ``"exposures"``, ``"requests"``).
        num_workers: DataLoader workers (each keeps one day in memory).
        pin_memory: Pin batches in page-locked memory (for GPU training).
        seed: Seed of the within-day shuffles and of the negative draws.
        chunk_rows: Stage rows of the day part loaded at a time (see :class:`RecFlowDataModule`).
        max_feature_size: The largest embedding table (rows) a feature may need (see :class:`RecFlowDataModule`).
    """

    SAMPLE_LAYOUTS: ClassVar[dict[str, str]] = {**RecFlowDataModule.SAMPLE_LAYOUTS, "retrieval": "lists"}

    def __init__(
        self,
        root: str,
        batch_size: int = 4096,
        eval_batch_size: int = 900,
        negative_sampler: NegativeSampler | str = "uniform",
        train_days: list[str] | None = None,
        val_day: str | None = None,
        test_day: str | None = None,
        label: LabelDefinition | str = "effective_view",
        sample_kind: str = "retrieval",
        num_workers: int = 0,
        pin_memory: bool = False,
        seed: int = 0,
        chunk_rows: int | None = DEFAULT_CHUNK_ROWS,
        max_feature_size: int = DEFAULT_MAX_FEATURE_SIZE,
    ) -> None:
        # Set before the parent's constructor, which validates sample_kind through sample_kinds().
        self.negative_sampler = resolve_plugin("negative_samplers", negative_sampler, "--data.negative_sampler")
        super().__init__(
            root,
            batch_size=batch_size,
            eval_batch_size=eval_batch_size,
            train_days=train_days,
            val_day=val_day,
            test_day=test_day,
            label=label,
            sample_kind=sample_kind,
            num_workers=num_workers,
            pin_memory=pin_memory,
            seed=seed,
            chunk_rows=chunk_rows,
            max_feature_size=max_feature_size,
        )

    @property
    def pool_names(self) -> tuple[str, ...]:
        """Pools the sampler reads (its ``pool_names`` attribute; the corpus alone when it has none)."""
        return tuple(getattr(self.negative_sampler, "pool_names", ("corpus",)))

    def sample_kinds(self) -> dict[str, SampleKind]:
        """The parent's kinds plus ``"retrieval"``."""
        kinds = super().sample_kinds()
        kinds["retrieval"] = SampleKind(
            load=functools.partial(
                RetrievalTrainDay, label=self.label, sampler=self.negative_sampler, pool_names=self.pool_names
            ),
            count=functools.partial(RetrievalTrainDay.num_rows, label=self.label),
        )
        return kinds

    def check_training_samples(self) -> None:
        """Refuse a stage sampler whose stages hold no row on the training days."""
        stages = [name for name in getattr(self.negative_sampler, "stages", {}) if name in STAGE_CODE]
        if self.sample_kind == "retrieval" and stages:
            self.require_stage_rows(stages, "--data.negative_sampler", "stage negatives")

    def predict_dataloader(self) -> DataLoader:
        """The test day's requests with a positive exposure (as for the test)."""
        return self.evaluation_dataloaders(self.test_day)[0]

    def retrieval_corpus(self) -> Tensor:
        """Every video exposed over the store's days (shifted +1, sorted, unique): the corpus retrieved from."""
        corpus = np.unique(self.store.exposed_corpus(self.store.days[-1]))
        return torch.from_numpy(corpus.astype(np.int64) + 1)

    def evaluation_kinds(self, day: str) -> list[SampleKind | str]:
        """One kind: the day's requests with positives.

        Args:
            day: The day to evaluate on.
        """
        kind = SampleKind(
            load=functools.partial(RetrievalEvalDay, label=self.label),
            count=functools.partial(RetrievalEvalDay.num_rows, label=self.label),
        )
        return [kind]
