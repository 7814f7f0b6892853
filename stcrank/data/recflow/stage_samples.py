"""Training samples built from stage rows: extra stage negatives, per-request cascade lists, auxiliary stage items.

Each class is one day loaded for a sample kind (:class:`~stcrank.data.recflow.batching.DayData`), with a
``num_rows`` that counts the day's samples without loading it.

* :class:`ExtraNegativeDay` (``"extra_negatives"``): the exposures (label from the label definition) plus, per
  request, stage rows drawn by a :class:`~stcrank.plugins.NegativeSampler` as label 0. Exposures batch layout.
* :class:`RequestListDay` (``"request_lists"``): one sample per request, its slot items (see
  :mod:`stcrank.data.recflow.slots`). Candidates batch layout plus ``candidate_slot``.
* :class:`AuxiliaryExposureDay` (``"aux_exposures"``): each exposure with its request's first items of chosen
  stages. Exposures batch layout plus ``aux_items Long[B, K, 8]`` and ``aux_mask Bool[B, K]``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from stcrank.data.recflow.collate import ExposureDay, RequestFeatures, item_matrix
from stcrank.data.recflow.schema import CANDIDATE_BATCH_KEYS, EXPOSURE_BATCH_KEYS, ITEM_FEATURES, STAGE_CODE
from stcrank.data.recflow.slots import StageSlots
from stcrank.data.recflow.store import RecFlowStore
from stcrank.plugins import LabelDefinition, NegativeSampler

LIST_BATCH_KEYS: tuple[str, ...] = (*CANDIDATE_BATCH_KEYS, "candidate_slot")
"""Keys of a request-lists batch."""

AUX_BATCH_KEYS: tuple[str, ...] = (*EXPOSURE_BATCH_KEYS, "aux_items", "aux_mask")
"""Keys of an auxiliary-exposures batch."""

POOL_ELEMENTS = 1 << 22
"""Largest ``requests x pool width`` matrix handed to a sampler at once (requests are drawn in chunks)."""


def sampler_draws(sampler: NegativeSampler) -> tuple[list[str], int | None]:
    """The stages and per-stage count of a stage sampler (``stages`` and ``per_stage`` attributes).

    Raises:
        TypeError: If the sampler does not say what it draws (its draw counts are needed to size a day).
    """
    stages, per_stage = getattr(sampler, "stages", None), getattr(sampler, "per_stage", 0)
    if not stages or per_stage == 0:
        raise TypeError(
            f"extra_negatives needs a stage sampler with `stages` and `per_stage` attributes (e.g. stage_extra), "
            f"got {type(sampler).__name__}"
        )
    return list(stages), per_stage


def extra_counts(stage_count: np.ndarray, stages: Sequence[str], per_stage: int | None) -> np.ndarray:
    """Number of extra negatives of each request: ``min(per_stage, n)`` rows of each stage (all with None)."""
    counts = stage_count[:, [STAGE_CODE[stage] for stage in stages]].astype(np.int64)
    return (counts if per_stage is None else np.minimum(counts, per_stage)).sum(axis=1)


def is_global(sampler: NegativeSampler) -> bool:
    """Whether a stage sampler draws from the whole day (``scope="global"``) rather than within each request."""
    return getattr(sampler, "scope", "request") == "global"


def global_extra_count(stage_count: np.ndarray, sampler: NegativeSampler) -> int:
    """Number of extra negatives of a day drawn with ``scope="global"``, from the stage counts alone."""
    stages, _ = sampler_draws(sampler)
    totals = stage_count.sum(axis=0)
    return sum(sampler.global_count(int(totals[STAGE_CODE[s]]), len(stage_count)) for s in stages)


def _global_draw(
    offsets: np.ndarray, stages: Sequence[str], sampler: NegativeSampler, generator: torch.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Candidate-table rows drawn from the whole day (``scope="global"``) and the request row of each."""
    chosen, requests = [], []
    sizes, pools = {}, {}
    for stage in stages:
        start, end = offsets[:, STAGE_CODE[stage]], offsets[:, STAGE_CODE[stage] + 1]
        counts = end - start
        # The day's rows of the stage, request by request, and the request of each.
        request = np.repeat(np.arange(len(offsets)), counts)
        rows = np.repeat(start - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts) + np.arange(counts.sum())
        pools[stage], sizes[stage] = (rows, request), len(rows)
    drawn = sampler.sample_global(sizes, len(offsets), generator)
    for stage in stages:
        rows, request = pools[stage]
        positions = drawn[stage].numpy()
        chosen.append(rows[positions])
        requests.append(request[positions])
    return np.concatenate(chosen).astype(np.int64), np.concatenate(requests).astype(np.int64)


def day_seed(seed: int, day: str) -> int:
    """A generator seed of a day's draws, from the data module's seed and the date."""
    return int(np.random.SeedSequence([seed, int(day.replace("-", ""))]).generate_state(1)[0])


class ExtraNegativeDay:
    """A day's exposures plus stage rows drawn as label-0 samples (data distribution shift).

    The rows are drawn within each request, or from the whole day when the sampler's ``scope`` is ``global``
    (then from the whole day part when ``chunk_rows`` splits the day). The draw is made once per day, seeded by
    ``seed`` and the date, so every epoch and every worker sees the same samples (the within-day shuffle still
    changes per epoch).

    Args:
        store: The store.
        day: The day.
        label: The label definition of the exposures.
        sampler: A stage sampler (``stage_extra``), given per-request pools of stage rows.
        seed: Seed of the draw.
    """

    def __init__(
        self, store: RecFlowStore, day: str, label: LabelDefinition, sampler: NegativeSampler, seed: int = 0
    ) -> None:
        stages, _ = sampler_draws(sampler)
        self.exposures = ExposureDay(store, day, label)
        offsets = store.stage_offsets(day)
        generator = torch.Generator().manual_seed(day_seed(seed, day))
        chosen: list[np.ndarray] = []
        requests: list[np.ndarray] = []
        n_requests = len(offsets)
        widest = max(int((offsets[:, STAGE_CODE[s] + 1] - offsets[:, STAGE_CODE[s]]).max(initial=0)) for s in stages)
        chunk = max(1, POOL_ELEMENTS // max(widest, 1))
        if is_global(sampler):
            day_rows, day_requests = _global_draw(offsets, stages, sampler, generator)
            chosen.append(day_rows)
            requests.append(day_requests)
            n_requests = 0  # no per-request draw
        for begin in range(0, n_requests, chunk):  # per-chunk loop; vectorised within
            rows = np.arange(begin, min(begin + chunk, n_requests))
            pools = {}
            for stage in stages:
                start, end = offsets[rows, STAGE_CODE[stage]], offsets[rows, STAGE_CODE[stage] + 1]
                width = int((end - start).max(initial=0))
                slots = start[:, None] + np.arange(width)
                # Pool ids are candidate-table rows + 1 (0 = padding), so the draw gives rows back.
                pools[stage] = torch.from_numpy(np.where(slots < end[:, None], slots + 1, 0))
            drawn = sampler.sample(pools, torch.zeros(len(rows), dtype=torch.long), generator)
            picked = drawn.mask.numpy()
            chosen.append(drawn.items.numpy()[picked] - 1)
            requests.append(np.broadcast_to(rows[:, None], picked.shape)[picked])
        picked_rows = np.concatenate(chosen) if chosen else np.zeros(0, np.int64)
        data = store.candidates(day, list(ITEM_FEATURES))
        order = np.argsort(picked_rows, kind="stable")  # read the candidate columns in file order
        extra_item = item_matrix({n: data[n][picked_rows[order]] for n in ITEM_FEATURES})
        extra_request = torch.from_numpy((np.concatenate(requests) if requests else np.zeros(0, np.int64))[order])
        self.request_row = torch.cat([self.exposures.request_row, extra_request.long()])
        self.item = torch.cat([self.exposures.item, extra_item])
        self.label = torch.cat([self.exposures.label, torch.zeros(len(extra_request))])
        self.n_extra = len(extra_request)

    @staticmethod
    def num_rows(store: RecFlowStore, day: str, label: LabelDefinition, sampler: NegativeSampler) -> int:
        """Exposures inside the label's mask plus the number of draws, from the stage counts alone."""
        stages, per_stage = sampler_draws(sampler)
        stage_count = store.requests(day, ["stage_count"])["stage_count"]
        if is_global(sampler):
            return ExposureDay.num_rows(store, day, label) + global_extra_count(stage_count, sampler)
        return ExposureDay.num_rows(store, day, label) + int(extra_counts(stage_count, stages, per_stage).sum())

    @staticmethod
    def request_rows(store: RecFlowStore, day: str, label: LabelDefinition, sampler: NegativeSampler) -> np.ndarray:
        """The request row of each sample of a day: the exposures', then the draws' (made in request order)."""
        stages, per_stage = sampler_draws(sampler)
        stage_count = store.requests(day, ["stage_count"])["stage_count"]
        draws = np.repeat(np.arange(len(stage_count)), extra_counts(stage_count, stages, per_stage))
        return np.concatenate([ExposureDay.request_rows(store, day, label), draws])

    def __len__(self) -> int:
        return len(self.label)

    def batch(self, index: Tensor, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Gather samples ``index`` into an exposures batch (the draw was made when the day was loaded)."""
        out = self.exposures.requests.gather_shared(self.request_row[index])
        out["item"] = self.item[index].long()
        out["label"] = self.label[index]
        return {key: out[key] for key in EXPOSURE_BATCH_KEYS}


class RequestListDay:
    """One sample per request: its slot items with priorities (FS-LTR and PositiveRank training).

    Rows are the requests with at least one row of the slots' stages.

    Args:
        store: The store.
        day: The day.
        label: The label definition (splits exposures into click and realshow).
        slots: Slot name -> number of items (the first rows of that stage), in column order.
    """

    def __init__(self, store: RecFlowStore, day: str, label: LabelDefinition, slots: Mapping[str, int]) -> None:
        self.requests = RequestFeatures.load(store, day)
        self.slots = StageSlots(store, day, label, slots)
        self.rows = torch.from_numpy(StageSlots.requests_with_items(store, day, list(slots)))

    @staticmethod
    def num_rows(store: RecFlowStore, day: str, slots: Mapping[str, int]) -> int:
        """Number of requests with at least one row of the slots' stages."""
        return len(StageSlots.requests_with_items(store, day, list(slots)))

    def __len__(self) -> int:
        return len(self.rows)

    def batch(self, index: Tensor, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Gather requests ``index`` (positions among the rows) with their slot items."""
        rows = self.rows[index]
        out = self.requests.gather(rows)
        slots = self.slots.gather(rows)
        out["candidates"] = slots["items"]
        out["candidate_mask"] = slots["mask"]
        out["candidate_label"] = slots["label"]
        out["candidate_stage"] = slots["priority"]
        out["candidate_slot"] = slots["slot"]
        return {key: out[key] for key in LIST_BATCH_KEYS}


class AuxiliaryExposureDay:
    """Each exposure with the first items of chosen stages of its request (auxiliary ranking loss).

    Args:
        store: The store.
        day: The day.
        label: The label definition of the exposures.
        slots: Stage name -> number of items taken from the start of that stage.
    """

    def __init__(self, store: RecFlowStore, day: str, label: LabelDefinition, slots: Mapping[str, int]) -> None:
        if "click" in slots or "realshow" in slots:
            raise ValueError("aux_exposures: the auxiliary items are stage samples; realshow/click are not allowed")
        self.exposures = ExposureDay(store, day, label)
        self.slots = StageSlots(store, day, label, slots)

    @staticmethod
    def num_rows(store: RecFlowStore, day: str, label: LabelDefinition) -> int:
        """Number of exposures inside the label's mask."""
        return ExposureDay.num_rows(store, day, label)

    def __len__(self) -> int:
        return len(self.exposures)

    def batch(self, index: Tensor, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Gather exposures ``index`` with their request's stage items."""
        out = self.exposures.batch(index, generator)
        slots = self.slots.gather(self.exposures.request_row[index])
        out["aux_items"] = slots["items"]
        out["aux_mask"] = slots["mask"]
        return {key: out[key] for key in AUX_BATCH_KEYS}
