"""Full-stage learning to rank on both stages: FS-RankNet (``fs_ranknet``) and FS-LambdaLoss (``fs_lambdaloss``).

Both train each stage's tower alone on the whole list of the request (Zheng et al., "Full Stage Learning to
Rank", WWW 2024) and add the two towers' losses; nothing couples the stages but the shared data.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from stcrank_plugins.losses.cascade import FSLTRLoss
from stcrank_plugins.losses.two_stage.common import LCRON_NEGATIVE_GRADES, TwoStageLoss, stage_levels

__all__ = ["FSLambdaLoss", "FSRankNetLoss", "lambda_loss"]


class FSRankNetLoss(TwoStageLoss):
    r"""RankNet between stage blocks, normalised per block, for each stage's tower.

    With stage levels ``l`` (the ranking stage's top items ``T``, ``rank_neg`` ``T - 1``...) and for each tower
    ``s`` in ``(s1, s2)``::

        L(s) = sum_{g >= 1} sum_{l_i = g, l_j < g} softplus(-(s_i - s_j)) / #{pairs with l_i = g}
        L = L(s1) + L(s2)

    i.e. the top items against the 30 others, ``rank_neg`` against ``coarse_neg`` and ``prerank_neg``,
    ``coarse_neg`` against ``prerank_neg``, each group a mean over the batch's pairs: the reference's
    ``compute_fsltr_loss_all_by_rank``, which is :class:`~stcrank_plugins.losses.cascade.FSLTRLoss` with
    ``normalize="group"`` on the levels. The reference divides by the pairs of a full list (30, 20, 10 per
    higher item); here by the pairs of real candidates.

    Args:
        negative_grades: Relevance of the negative stages (LCRON: 5, 6, 7).
    """

    def __init__(self, negative_grades: Sequence[float] = LCRON_NEGATIVE_GRADES) -> None:
        super().__init__()
        self.negative_grades = tuple(float(g) for g in negative_grades)
        self.ranknet = FSLTRLoss(normalize="group")

    def cascade_loss(self, first: Tensor, second: Tensor, relevance: Tensor, mask: Tensor) -> Tensor:
        """The group RankNet of each tower, added."""
        levels = stage_levels(relevance, mask, self.negative_grades).to(first.dtype)
        return self.ranknet(first, levels, mask) + self.ranknet(second, levels, mask)


def _discount(position: Tensor) -> Tensor:
    """``1 / log2(1 + position)`` for 1-based positions."""
    return 1.0 / torch.log2(1.0 + position)


def lambda_loss(scores: Tensor, relevance: Tensor, mask: Tensor, top_n: int, smooth_fraction: float) -> Tensor:
    """LambdaLoss's NDCG-Loss2++ of each request, as TF-Ranking defines it, with linear gains.

    Args:
        scores: ``[B, L]``.
        relevance: The gains, ``[B, L]``.
        mask: Bool ``[B, L]``.
        top_n: Positions beyond ``top_n`` get no discount.
        smooth_fraction: Weight ``mu`` of the smooth discount term (NDCG-Loss2++'s mix).

    Returns:
        ``[B]``: the weighted pairwise loss of each request.
    """
    width = scores.shape[-1]
    column = torch.arange(width, device=scores.device)
    with torch.no_grad():
        # 1-based position of each real item by the current scores (ties in column order), padding last.
        order = torch.argsort(torch.where(mask, scores, torch.full_like(scores, -torch.inf)), -1, descending=True)
        position = torch.empty_like(order).scatter_(-1, order, column.expand_as(order)) + 1
        position = position.to(scores.dtype)
        ideal = torch.sort(torch.where(mask, relevance, torch.zeros_like(relevance)), -1, descending=True).values
        ideal_dcg = (ideal * _discount(column.to(scores.dtype) + 1)).sum(-1, keepdim=True)
        gain = torch.where(ideal_dcg > 0, relevance / ideal_dcg.clamp(min=1e-12), torch.zeros_like(relevance))
        distance = (position.unsqueeze(2) - position.unsqueeze(1)).abs()
        near = (position.unsqueeze(2) <= top_n) | (position.unsqueeze(1) <= top_n)
        u = torch.where(
            (distance > 0) & near, (_discount(distance) - _discount(distance + 1)).abs(), torch.zeros_like(distance)
        )
        top = torch.where(position <= top_n, _discount(position), torch.zeros_like(position))
        v = (top.unsqueeze(2) - top.unsqueeze(1)).abs()
        pair_discount = (1 - smooth_fraction) * u + smooth_fraction * v
        pairs = (relevance.unsqueeze(2) > relevance.unsqueeze(1)) & mask.unsqueeze(2) & mask.unsqueeze(1)
        weight = torch.where(pairs, (gain.unsqueeze(2) - gain.unsqueeze(1)).abs() * pair_discount, 0.0)
    margin = scores.unsqueeze(2) - scores.unsqueeze(1)
    return (weight * F.softplus(-margin)).sum((-2, -1))


class FSLambdaLoss(TwoStageLoss):
    r"""LambdaLoss (NDCG-Loss2++, Wang et al., CIKM 2018) on the graded relevance, for each stage's tower.

    For each tower ``s`` and request, with ``r_i`` the 1-based position of item ``i`` by ``s``,
    ``D(x) = 1 / log2(1 + x)``, gains ``G_i = y_i / IDCG`` (``IDCG`` over every real item)::

        u_ij = |D(|r_i - r_j|) - D(|r_i - r_j| + 1)|   when r_i <= n or r_j <= n (n = top_n), else 0
        v_ij = |D'(r_i) - D'(r_j)|,                     D'(r) = D(r) for r <= n, else 0
        w_ij = |G_i - G_j| ((1 - mu) u_ij + mu v_ij)    (no gradient)
        L(s) = mean_requests sum_{y_i > y_j} w_ij softplus(-(s_i - s_j)),   L = L(s1) + L(s2)

    The reference sums the BCE over both orders of every pair, which counts each pair twice (its values are
    twice these); it ranks and weighs padded slots with their stage's relevance (a missing ranking-stage item
    gets the highest); here padding is left out.

    Args:
        top_n: Cut-off of the discounts (reference: 30).
        smooth_fraction: ``mu`` (reference: 0.8).
    """

    def __init__(self, top_n: int = 30, smooth_fraction: float = 0.8) -> None:
        super().__init__()
        if top_n < 1:
            raise ValueError(f"FSLambdaLoss: top_n must be >= 1, got {top_n}")
        if not 0.0 <= smooth_fraction <= 1.0:
            raise ValueError(f"FSLambdaLoss: smooth_fraction must be in [0, 1], got {smooth_fraction}")
        self.top_n, self.smooth_fraction = top_n, smooth_fraction

    def cascade_loss(self, first: Tensor, second: Tensor, relevance: Tensor, mask: Tensor) -> Tensor:
        """Mean over requests with a real candidate of each tower's LambdaLoss, added."""
        rows = mask.any(-1).to(first.dtype)
        total = lambda_loss(first, relevance, mask, self.top_n, self.smooth_fraction)
        total = total + lambda_loss(second, relevance, mask, self.top_n, self.smooth_fraction)
        return (total * rows).sum() / rows.sum().clamp(min=1.0)
