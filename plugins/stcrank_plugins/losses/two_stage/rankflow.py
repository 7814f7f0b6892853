"""RankFlow (entry point ``rankflow``): each stage on the data of its own step of the flow, plus distillation."""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor

from stcrank_plugins.losses.pointwise import masked_bce_with_logits
from stcrank_plugins.losses.two_stage.common import (
    LCRON_NEGATIVE_GRADES,
    TwoStageLoss,
    masked_mean,
    stage_levels,
    top_k_mask,
)

__all__ = ["RankFlowLoss"]


class RankFlowLoss(TwoStageLoss):
    r"""RankFlow (Qin et al., SIGIR 2022) as LCRON's benchmark runs it.

    With ``y_i = 1`` for the ranking stage's top items (stage level ``T``) and 0 otherwise, and ``R`` the first
    stage's top ``first_k`` real candidates of the request::

        L = mean_{i real} BCE(s1_i, y_i)                      first stage on the whole list
          + mean_{i in R} BCE(s2_i, y_i)                        second stage on what the first one kept
          + (1 - alpha) mean_{i in R} (s1_i - sg(s2_i))^2       the second stage teaches the first
          + alpha mean_b -log sigmoid(mean_{i in H} s1_i - mean_{i in D} s1_i)

    where ``sg`` stops the gradient, and ``H`` and ``D`` are the second stage's top ``upper`` and bottom ``lower``
    items of ``R``. The reference runs ``alpha = 0``, so the last term is off by default.

    Args:
        first_k: Items the first stage keeps.
        alpha: Weight of the ranking term against the distillation term.
        upper: Size of ``H``.
        lower: Size of ``D``.
        negative_grades: Relevance of the negative stages (LCRON: 5, 6, 7).
    """

    def __init__(
        self,
        first_k: int = 30,
        alpha: float = 0.0,
        upper: int = 10,
        lower: int = 20,
        negative_grades: Sequence[float] = LCRON_NEGATIVE_GRADES,
    ) -> None:
        super().__init__()
        if first_k < 1 or upper < 1 or lower < 1:
            raise ValueError(f"RankFlowLoss: first_k, upper and lower must be >= 1, got {first_k}, {upper}, {lower}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"RankFlowLoss: alpha must be in [0, 1], got {alpha}")
        self.first_k, self.alpha, self.upper, self.lower = first_k, alpha, upper, lower
        self.negative_grades = tuple(float(g) for g in negative_grades)

    def cascade_loss(self, first: Tensor, second: Tensor, relevance: Tensor, mask: Tensor) -> Tensor:
        """The four terms above."""
        levels = stage_levels(relevance, mask, self.negative_grades)
        label = (levels == len(self.negative_grades)).to(first.dtype)
        kept = top_k_mask(first, mask, self.first_k)
        loss = masked_bce_with_logits(first, label, mask) + masked_bce_with_logits(second, label, kept)
        if self.alpha < 1:
            loss = loss + (1 - self.alpha) * masked_mean((first - second.detach()) ** 2, kept)
        if self.alpha > 0:
            high = top_k_mask(second, kept, self.upper).to(first.dtype)
            low = top_k_mask(second, kept, self.lower, largest=False).to(first.dtype)
            gap = (first * high).sum(-1) / high.sum(-1).clamp(min=1) - (first * low).sum(-1) / low.sum(-1).clamp(min=1)
            rows = kept.any(-1)
            loss = loss + self.alpha * masked_mean(-F.logsigmoid(gap), rows)
        return loss
