"""Two-stage BCE (entry point ``two_stage_bce``): each stage learns on its own, the baseline of LCRON's benchmark."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from stcrank_plugins.losses.pointwise import masked_bce_with_logits
from stcrank_plugins.losses.two_stage.common import LCRON_NEGATIVE_GRADES, TwoStageLoss, stage_levels

__all__ = ["TwoStageBCELoss"]


class TwoStageBCELoss(TwoStageLoss):
    r"""Binary cross-entropy on each stage's own samples: the ranking stage's top items are the positives.

    With ``l_i`` the stage level of candidate ``i`` (top level ``T`` for the ranking stage's top items, ``T - 1``
    for ``rank_neg``; see :mod:`~stcrank_plugins.losses.two_stage.common`) and ``y_i = 1[l_i = T]``::

        L = mean_{i real} BCE(s1_i, y_i) + mean_{i real, l_i >= T - 1} BCE(s2_i, y_i)

    The first stage (retrieval) learns the top items against all 30 negatives; the second stage (pre-rank)
    learns them against the ``rank_neg`` items only, which is what it meets after retrieval. As in the reference
    code; the reference's means also count the padded slots (with weight 0), these are over real candidates.

    Args:
        negative_grades: Relevance of the negative stages (LCRON: 5, 6, 7).
    """

    def __init__(self, negative_grades: Sequence[float] = LCRON_NEGATIVE_GRADES) -> None:
        super().__init__()
        self.negative_grades = tuple(float(g) for g in negative_grades)

    def cascade_loss(self, first: Tensor, second: Tensor, relevance: Tensor, mask: Tensor) -> Tensor:
        """BCE of the first stage on every candidate plus BCE of the second on the top two levels."""
        levels = stage_levels(relevance, mask, self.negative_grades)
        top = len(self.negative_grades)
        label = (levels == top).to(first.dtype)
        first_loss = masked_bce_with_logits(first, label, mask)
        second_loss = masked_bce_with_logits(second, label, mask & (levels >= top - 1))
        return first_loss + second_loss
