"""Uniform random negatives from the exposed corpus (entry point ``uniform``): RecFlow's retrieval baseline.

Every negative is drawn uniformly from ``pools["corpus"]`` (the day's accumulated exposed videos), and the
example's target is rejected *exactly*: colliding draws are redrawn, vectorised over the batch, until none
collides (the reference code gives up after 10 tries and keeps the target as a negative). Rows whose target takes
up nearly the whole corpus are finished by an exact draw among the corpus entries that differ from the target; a
row with no such entry gets ``mask=False``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from stcrank.plugins import NegativeSampler, SampledNegatives

__all__ = ["UniformNegativeSampler", "draw_excluding", "rank_select"]

_REDRAW_ROUNDS = 32
"""Vectorised redraw rounds before the exact fallback; each round leaves a collision with probability
(target's share of the corpus), so the fallback runs only for degenerate corpora."""


def rank_select(allowed: Tensor, rank: Tensor) -> Tensor:
    """Column of the ``rank``-th (0-based) ``True`` entry of each row of ``allowed``.

    Args:
        allowed: Bool ``[R, S]``.
        rank: Long ``[R, n]``, each below the row's count of ``True`` entries.

    Returns:
        Long ``[R, n]`` column positions.
    """
    running = allowed.long().cumsum(dim=1)  # non-decreasing per row
    return torch.searchsorted(running, rank + 1).clamp(max=allowed.shape[1] - 1)


def draw_excluding(corpus: Tensor, targets: Tensor, count: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Draw ``count`` items per row uniformly (with replacement) from ``corpus``, never the row's target.

    Args:
        corpus: Item ids, 1-D ``[M]``.
        targets: The item to reject in each row, ``[B]``.
        count: Draws per row.
        generator: Random generator.

    Returns:
        ``(items [B, count], mask [B, count])``; ``mask`` is ``False`` only in rows whose corpus holds nothing
        but the target.
    """
    rows = targets.shape[0]
    size = corpus.shape[0]
    items = torch.zeros(rows, count, dtype=corpus.dtype)
    mask = torch.zeros(rows, count, dtype=torch.bool)
    if size == 0 or rows == 0 or count == 0:
        return items, mask
    items = corpus[torch.randint(size, (rows, count), generator=generator)]
    targets = targets.to(corpus.dtype)
    collide = items == targets[:, None]
    for _ in range(_REDRAW_ROUNDS):
        if not bool(collide.any()):
            return items, torch.ones(rows, count, dtype=torch.bool)
        where = collide.nonzero(as_tuple=True)
        items[where] = corpus[torch.randint(size, (where[0].numel(),), generator=generator)]
        collide = items == targets[:, None]
    # Exact finish for the (rare) rows still colliding: draw among the corpus entries other than the target.
    mask = torch.ones(rows, count, dtype=torch.bool)
    stuck = collide.any(dim=1).nonzero(as_tuple=True)[0]
    allowed = corpus[None, :] != targets[stuck, None]  # [U, M]
    available = allowed.sum(dim=1)
    picks = (torch.rand(len(stuck), count, generator=generator) * available[:, None]).long()
    picks = torch.minimum(picks, (available[:, None] - 1).clamp(min=0))
    redrawn = corpus[rank_select(allowed, picks)]
    stuck_collide = collide[stuck]
    items[stuck] = torch.where(stuck_collide, redrawn, items[stuck])
    mask[stuck] = ~(stuck_collide & (available[:, None] == 0))
    items = items.masked_fill(~mask, 0)
    return items, mask


class UniformNegativeSampler(NegativeSampler):
    """``num_negatives`` uniform draws (with replacement) from the corpus per example, never the target.

    Args:
        num_negatives: Negatives per example (RecFlow: 200).
    """

    pool_names: tuple[str, ...] = ("corpus",)
    """Pools this sampler reads."""

    def __init__(self, num_negatives: int = 200) -> None:
        if isinstance(num_negatives, bool) or not isinstance(num_negatives, int) or num_negatives < 1:
            raise ValueError(f"UniformNegativeSampler: num_negatives must be a positive integer, got {num_negatives!r}")
        self.num_negatives = num_negatives

    def sample(self, pools: Mapping[str, Tensor], targets: Tensor, generator: torch.Generator) -> SampledNegatives:
        """Draw the negatives of a batch.

        Args:
            pools: Must hold ``"corpus"``, a 1-D tensor of item ids.
            targets: The positive item of each example, ``[B]``.
            generator: Random generator.

        Returns:
            Items ``[B, num_negatives]`` with priority 0.

        Raises:
            ValueError: If the corpus pool is missing, not 1-D, or empty while the batch is not.
        """
        corpus = corpus_pool(pools, "UniformNegativeSampler", targets)
        items, mask = draw_excluding(corpus, targets, self.num_negatives, generator)
        return SampledNegatives(items=items, priority=torch.zeros_like(items), mask=mask)


def corpus_pool(pools: Mapping[str, Tensor], owner: str, targets: Tensor) -> Tensor:
    """The checked ``"corpus"`` pool.

    Args:
        pools: The pools handed to a sampler.
        owner: The sampler's name, for messages.
        targets: The batch's targets (an empty corpus is an error only for a non-empty batch).

    Raises:
        ValueError: If the pool is missing, not 1-D, or empty for a non-empty batch.
    """
    if "corpus" not in pools:
        raise ValueError(f"{owner}: pools have no 'corpus' (got {sorted(pools)})")
    corpus = pools["corpus"]
    if corpus.dim() != 1:
        raise ValueError(f"{owner}: pools['corpus'] must be 1-D item ids, got shape {tuple(corpus.shape)}")
    if corpus.numel() == 0 and targets.numel():
        raise ValueError(f"{owner}: pools['corpus'] is empty; there is nothing to draw negatives from")
    return corpus
