"""Hard negatives from the example's own request funnel (entry point ``stage_hard``), the rest uniform.

RecFlow's hard-negative mining and cascade (FS-LTR) retrieval experiments replace some of the 200 random
negatives with items the same request's funnel logged at a given stage: ``prerank_neg``, ``coarse_neg``,
``rank_neg``, ``rank_pos``, ``rerank_neg``, ``rerank_pos``, ``realshow`` (the request's other exposures) or
``exposure_neg`` (the request's exposures without an effective view). The data module hands each example's
stage lists as ``[B, S]`` pools (0 = padding).

Compared with the reference code:

* the target is never drawn (the reference retries 10 times, then keeps it);
* a request with no item of a stage (after removing the target) yields masked slots (``mask=False``), which
  losses ignore; the reference inserts video id 0, a zero embedding that still counts as a negative of score 0.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from stcrank.data.recflow.schema import STAGE_PRIORITY, STAGES
from stcrank.plugins import NegativeSampler, SampledNegatives
from stcrank_plugins.negative_samplers.uniform import corpus_pool, draw_excluding, rank_select

__all__ = ["HARD_NEGATIVE_PRIORITY", "StageHardNegativeSampler", "draw_from_lists"]

HARD_NEGATIVE_PRIORITY: dict[str, int] = {
    **{stage: STAGE_PRIORITY[stage] for stage in STAGES},
    "exposure_neg": STAGE_PRIORITY["realshow"],
}
"""Pools a stage sampler can draw from and the cascade priority of their items (exposure_neg is an exposure)."""


def draw_from_lists(
    lists: Tensor, targets: Tensor, count: int, generator: torch.Generator, replacement: bool = True
) -> tuple[Tensor, Tensor]:
    """Draw ``count`` items per row from its list, never the row's target nor padding (id 0).

    Args:
        lists: Item ids ``[B, S]``, 0 on padding.
        targets: The item to reject in each row, ``[B]``.
        count: Draws per row.
        generator: Random generator.
        replacement: Draw with replacement (RecFlow's reference); without, a row with fewer than ``count``
            eligible items fills the rest of its slots with masked entries.

    Returns:
        ``(items [B, count], mask [B, count])``; masked slots hold item 0.
    """
    rows, width = lists.shape
    if rows == 0 or count == 0 or width == 0:
        return torch.zeros(rows, count, dtype=lists.dtype), torch.zeros(rows, count, dtype=torch.bool)
    allowed = (lists != 0) & (lists != targets[:, None].to(lists.dtype))
    available = allowed.sum(dim=1, keepdim=True)  # [B, 1]
    if replacement:
        rank = (torch.rand(rows, count, generator=generator) * available).long()
        rank = torch.minimum(rank, (available - 1).clamp(min=0))
        columns = rank_select(allowed, rank)
        mask = (available > 0).expand(rows, count)
    else:
        keys = torch.rand(rows, width, generator=generator).masked_fill(~allowed, -1.0)
        taken = min(count, width)
        columns = keys.topk(taken, dim=1).indices
        if taken < count:
            columns = torch.cat([columns, columns.new_zeros(rows, count - taken)], dim=1)
        mask = torch.arange(count)[None, :] < available
    items = lists.gather(1, columns).masked_fill(~mask, 0)
    return items, mask.clone()


class StageHardNegativeSampler(NegativeSampler):
    """``num_negatives`` negatives per example: ``stages[s]`` from each stage pool ``s``, the rest uniform.

    Output columns are the uniform negatives first, then each stage's draws in the order of ``stages``. Stage
    draws carry the stage's cascade priority (:data:`HARD_NEGATIVE_PRIORITY`), random ones priority 0, so one draw
    feeds BPR (hard-negative mining) or FS-LTR (cascade) alike.

    Args:
        stages: How many items to draw from each stage pool, e.g. ``{"prerank_neg": 1}``.
        num_negatives: Total negatives per example (RecFlow: 200), stage ones included.
        replacement: Draw stage items with replacement (RecFlow's reference); without, a request with fewer
            eligible items than asked masks the missing slots.
    """

    def __init__(self, stages: dict[str, int], num_negatives: int = 200, replacement: bool = True) -> None:
        if not stages:
            raise ValueError(
                "StageHardNegativeSampler: stages is empty; name at least one stage, e.g. {prerank_neg: 1}"
            )
        unknown = [name for name in stages if name not in HARD_NEGATIVE_PRIORITY]
        if unknown:
            raise ValueError(
                f"StageHardNegativeSampler: unknown stages {unknown}; choose from {list(HARD_NEGATIVE_PRIORITY)}"
            )
        for name, count in stages.items():
            if isinstance(count, bool) or not isinstance(count, int) or count < 1:
                raise ValueError(
                    f"StageHardNegativeSampler: stages[{name!r}] must be a positive integer, got {count!r}"
                )
        if sum(stages.values()) > num_negatives:
            raise ValueError(
                f"StageHardNegativeSampler: {sum(stages.values())} stage negatives exceed num_negatives={num_negatives}"
            )
        self.stages = dict(stages)
        self.num_negatives = num_negatives
        self.replacement = replacement

    @property
    def pool_names(self) -> tuple[str, ...]:
        """Pools this sampler reads: the corpus and its stages."""
        return ("corpus", *self.stages)

    def sample(self, pools: Mapping[str, Tensor], targets: Tensor, generator: torch.Generator) -> SampledNegatives:
        """Draw the negatives of a batch.

        Args:
            pools: ``"corpus"`` (1-D item ids) and one ``[B, S]`` pool per stage of :attr:`stages` (0 = padding).
            targets: The positive item of each example, ``[B]``.
            generator: Random generator.

        Returns:
            Items, priorities and mask, each ``[B, num_negatives]``.

        Raises:
            ValueError: If a pool is missing or misshapen.
        """
        rows = targets.shape[0]
        corpus = corpus_pool(pools, "StageHardNegativeSampler", targets)
        random_count = self.num_negatives - sum(self.stages.values())
        items, mask = draw_excluding(corpus, targets, random_count, generator)
        parts_items, parts_mask = [items], [mask]
        parts_priority = [torch.zeros(rows, random_count, dtype=torch.long)]
        for name, count in self.stages.items():
            if name not in pools:
                raise ValueError(f"StageHardNegativeSampler: pools have no {name!r} (got {sorted(pools)})")
            lists = pools[name]
            if lists.dim() != 2 or lists.shape[0] != rows:
                raise ValueError(
                    f"StageHardNegativeSampler: pools[{name!r}] must be [B={rows}, S], got {tuple(lists.shape)}"
                )
            drawn, drawn_mask = draw_from_lists(lists, targets, count, generator, self.replacement)
            parts_items.append(drawn.to(items.dtype))
            parts_mask.append(drawn_mask)
            parts_priority.append(torch.full((rows, count), HARD_NEGATIVE_PRIORITY[name], dtype=torch.long))
        return SampledNegatives(
            items=torch.cat(parts_items, dim=1),
            priority=torch.cat(parts_priority, dim=1),
            mask=torch.cat(parts_mask, dim=1),
        )
