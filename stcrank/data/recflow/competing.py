"""Competing items of past behaviours: the stage items of the request each past behaviour came from (RecFlow UBM).

For each of a request's 50 past behaviours, the first ``size`` items of one stage (``rank_pos`` in RecFlow) of the
*behaviour's* request are looked up in the day's UBM table (``ubm_seq_request_id_dict``), keyed by the
behaviour's request id. The lookup is made once per day into two ``[R, 50]`` arrays (start row, count), and a
batch gathers ``[R, 50, size]`` rows with one tensor index, once per request of the batch (``R`` is the number
of rows of ``seq``: a batch with ``request_slot`` holds its requests once). Batches gain

=====================  ====================  ===============================================================
``competing``          Long[R, 50, K, 5]     video_id, author_id, category_level_two, category_level_one,
                                             upload_type of each competing item (shifted, 0 on padding)
``competing_mask``     Bool[R, 50, K]        True on real competing items (never on padded behaviours)
=====================  ====================  ===============================================================
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import Tensor

from stcrank.data.recflow.batching import DayData, SampleKind
from stcrank.data.recflow.schema import SEQ_FEATURES
from stcrank.data.recflow.store import RecFlowStore


class CompetingItems:
    """A day's competing items of every request's behaviours.

    Args:
        store: The store (its day must have a ``ubm`` table).
        day: The day.
        stage: The stage whose items compete (``rank_pos``).
        size: Competing items per behaviour (the first ``size`` of the stage).
    """

    def __init__(self, store: RecFlowStore, day: str, stage: str = "rank_pos", size: int = 10) -> None:
        if size < 1:
            raise ValueError(f"competing items: size must be >= 1, got {size}")
        request_id, values, valid = store.sequences(day, ("request_id",))
        past = values["request_id"]
        unique, inverse = np.unique(past[valid], return_inverse=True)
        lists = store.ubm_stage_lists(day, unique, [stage], columns=SEQ_FEATURES)
        start = np.zeros(past.shape, dtype=np.int64)
        count = np.zeros(past.shape, dtype=np.int64)
        start[valid] = lists.offsets[:-1][inverse]
        count[valid] = np.minimum(lists.counts(), size)[inverse]
        items = np.stack([np.asarray(lists.columns[n], dtype=np.int32) + 1 for n in SEQ_FEATURES], axis=-1)
        # One extra all-zero row that padding points at.
        self.item = torch.cat(
            [torch.from_numpy(items.reshape(-1, len(SEQ_FEATURES))), torch.zeros(1, 5, dtype=torch.int32)]
        )
        self.padding = len(items)
        self.start = torch.from_numpy(start)
        self.count = torch.from_numpy(count)
        self.request_id = torch.from_numpy(request_id.astype(np.int64))
        self.size = size

    def rows_of(self, request_id: Tensor) -> Tensor:
        """Request rows of raw request ids (the requests table is sorted by request id)."""
        return torch.searchsorted(self.request_id, request_id)

    def gather(self, rows: Tensor) -> dict[str, Tensor]:
        """``competing`` and ``competing_mask`` of request rows ``rows``."""
        offsets = torch.arange(self.size)
        mask = offsets < self.count[rows].unsqueeze(-1)  # [B, 50, K]
        index = torch.where(mask, self.start[rows].unsqueeze(-1) + offsets, self.padding)
        items = self.item.index_select(0, index.flatten()).view(*index.shape, self.item.shape[1])
        return {"competing": items.long(), "competing_mask": mask}


class WithCompeting:
    """A loaded day whose batches also carry the competing items of their requests' behaviours.

    Args:
        inner: The day of any sample kind whose batches have ``request_id``.
        competing: The day's competing items.
    """

    def __init__(self, inner: DayData, competing: CompetingItems) -> None:
        self.inner = inner
        self.competing = competing

    def __len__(self) -> int:
        return len(self.inner)

    def batch(self, index: Tensor, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """The inner batch plus ``competing`` and ``competing_mask`` (once per request with ``request_slot``)."""
        out = self.inner.batch(index, generator)
        request_id = out["request_id"]
        if "request_slot" in out:  # request ids of the batch's distinct requests
            request_id = request_id.new_zeros(out["seq"].shape[0]).index_copy_(0, out["request_slot"], request_id)
        out.update(self.competing.gather(self.competing.rows_of(request_id)))
        return out


def _load_with_competing(kind: SampleKind, stage: str, size: int, store: RecFlowStore, day: str) -> WithCompeting:
    return WithCompeting(kind.load(store, day), CompetingItems(store, day, stage, size))


def with_competing(kind: SampleKind, stage: str = "rank_pos", size: int = 10) -> SampleKind:
    """The same sample kind with competing items added to its batches."""
    load = functools.partial(_load_with_competing, kind, stage, size)
    return SampleKind(load=load, count=kind.count, requests=kind.requests)
