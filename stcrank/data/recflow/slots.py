"""The first ``n`` items of chosen stages of every request, in fixed slots (FS-LTR lists, auxiliary ranking items).

A request's *slots* are consecutive blocks of columns, one block per stage, e.g. ``click 6, realshow 6,
rerank_pos 10, rerank_neg 10, rank_pos 10, rank_neg 10`` (62 columns). Each block holds the first ``n`` rows of
that stage in the store's order (the release's file order), padded with ``-1``. ``click`` holds the exposures
with a positive label and ``realshow`` the exposures without one, so a clicked item is never repeated as a
``realshow`` item (the reference code pairs it with itself).

Slot codes order the blocks along the cascade (higher is later), for losses that pair blocks, see
:data:`SLOT_CODE`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from stcrank.data.recflow.collate import compute_labels, item_matrix
from stcrank.data.recflow.schema import (
    CLICK_PRIORITY,
    FEEDBACK_COLUMNS,
    ITEM_FEATURES,
    STAGE_CODE,
    STAGE_PRIORITY,
)
from stcrank.data.recflow.store import RecFlowStore
from stcrank.plugins import LabelDefinition

SLOT_CODE: dict[str, int] = {
    "prerank_neg": 0,
    "coarse_neg": 1,
    "rank_neg": 2,
    "rerank_neg": 3,
    "rank_pos": 4,
    "rerank_pos": 5,
    "realshow": 6,
    "click": 7,
}
"""Code of each slot block in ``candidate_slot`` (the rank-stage FS-LTR groups pair these codes)."""

SLOT_PRIORITY: dict[str, int] = {**STAGE_PRIORITY, "click": CLICK_PRIORITY}
"""Cascade priority of each slot block (``candidate_stage``)."""


def slot_stage(name: str) -> str:
    """The store stage a slot block reads (``click`` and ``realshow`` both read the exposures)."""
    return "realshow" if name == "click" else name


def check_slots(slots: Mapping[str, int], what: str) -> dict[str, int]:
    """Validate ``{slot name: size}`` and return it as a dict.

    Raises:
        ValueError: On an unknown slot name or a size below 1.
    """
    slots = dict(slots)
    if not slots:
        raise ValueError(f"{what}: needs at least one slot")
    for name, size in slots.items():
        if name not in SLOT_CODE:
            raise ValueError(f"{what}: unknown slot {name!r}; the slots are {list(SLOT_CODE)}")
        if int(size) < 1:
            raise ValueError(f"{what}: slot {name!r} must hold at least 1 item, got {size}")
    return {name: int(size) for name, size in slots.items()}


class StageSlots:
    """The slot items of every request of one day, gathered by request row.

    Args:
        store: The store.
        day: The day.
        label: The label definition: it splits exposures into ``click`` and ``realshow``; rows outside its mask
            are left out.
        slots: Slot name -> number of items, in column order.
    """

    def __init__(self, store: RecFlowStore, day: str, label: LabelDefinition, slots: Mapping[str, int]) -> None:
        slots = check_slots(slots, "StageSlots")
        offsets = store.stage_offsets(day)
        n_requests = len(offsets)
        data = store.candidates(day, ["stage", *ITEM_FEATURES, *FEEDBACK_COLUMNS])
        target, keep = compute_labels(label, {n: data[n] for n in FEEDBACK_COLUMNS}, f"{store.root}/{day}/candidates")
        target_np, keep_np = target.numpy(), keep.numpy()
        request_of = np.repeat(np.arange(n_requests), offsets[:, -1] - offsets[:, 0])
        width = sum(slots.values())
        index = np.full((n_requests, width), -1, dtype=np.int64)
        column = 0
        codes, priorities = [], []
        for name, size in slots.items():
            member = (data["stage"] == STAGE_CODE[slot_stage(name)]) & keep_np
            if name == "click":
                member &= target_np > 0
            elif name == "realshow":
                member &= target_np <= 0
            rows = np.flatnonzero(member)
            request = request_of[rows]  # sorted: the table is sorted by (request, stage)
            ordinal = np.arange(len(rows)) - np.searchsorted(request, request, side="left")
            take = ordinal < size
            index[request[take], column + ordinal[take]] = rows[take]
            codes += [SLOT_CODE[name]] * size
            priorities += [SLOT_PRIORITY[name]] * size
            column += size
        # Keep only the rows some slot uses (a day's stage table is large; its slots are small).
        # Padding points at one extra all-zero row, so gathering needs no clamping.
        used, inverse = np.unique(index[index >= 0], return_inverse=True)
        compact = np.full_like(index, len(used))
        compact[index >= 0] = inverse
        self.slots = slots
        self.padding = len(used)
        self.index = torch.from_numpy(compact)
        self.item = torch.cat(
            [item_matrix({n: data[n][used] for n in ITEM_FEATURES}), torch.zeros(1, 8, dtype=torch.int32)]
        )
        self.label = torch.cat([target[torch.from_numpy(used)], torch.zeros(1)])
        self.slot_code = torch.tensor(codes, dtype=torch.long)
        self.priority = torch.tensor(priorities, dtype=torch.long)

    @staticmethod
    def requests_with_items(store: RecFlowStore, day: str, slots: Sequence[str]) -> np.ndarray:
        """Request rows with at least one row of the slots' stages (label masks are not applied)."""
        codes = sorted({STAGE_CODE[slot_stage(name)] for name in slots})
        counts = store.requests(day, ["stage_count"])["stage_count"]
        return np.flatnonzero(counts[:, codes].sum(axis=1) > 0)

    def gather(self, rows: Tensor) -> dict[str, Tensor]:
        """The slots of request rows ``rows``.

        Returns:
            ``items Long[B, W, 8]``, ``mask Bool[B, W]``, ``label Float[B, W]`` (items and label 0 on padding),
            ``priority Long[B, W]`` and ``slot Long[B, W]`` (both 0 on padding).
        """
        index = self.index[rows]
        mask = index != self.padding
        return {
            "items": self.item[index].long(),
            "mask": mask,
            "label": self.label[index],
            "priority": self.priority.expand_as(index) * mask,
            "slot": self.slot_code.expand_as(index) * mask,
        }
