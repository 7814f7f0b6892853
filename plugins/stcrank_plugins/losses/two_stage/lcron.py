"""LCRON (entry point ``lcron``): the cascade's end-to-end recall as one loss (Wang et al., ICML 2025)."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from stcrank.metrics.cascade import ground_truth
from stcrank_plugins.losses.two_stage.common import TwoStageLoss
from stcrank_plugins.losses.two_stage.sorting import neural_sort, soft_sort, top_k_probability

__all__ = ["LCRONLoss", "survival_bce"]


def survival_bce(probability: Tensor, truth: Tensor, mask: Tensor, eps: float) -> Tensor:
    """``(1/n) sum_i [-g_i log(p_i + eps) - (1 - g_i) log(1 - p_i + eps)]`` of each request, ``[B]``."""
    loss = -truth * torch.log(probability + eps) - (1 - truth) * torch.log(1 - probability + eps)
    loss = torch.where(mask, loss, torch.zeros_like(loss))
    return loss.sum(-1) / mask.sum(-1).clamp(min=1).to(loss.dtype)


class LCRONLoss(TwoStageLoss):
    r"""LCRON: learn both stages as one network from the survival of the ground truth through the cascade.

    Each stage's relaxed permutation ``P_m = NeuralSort(s_m; tau)`` (or SoftSort) gives the probability that
    candidate ``i`` is in the stage's top ``k``, ``p_m^k(i) = sum_{r<k} P_m[r, i] / sg(sum_r P_m[r, i])``. With
    ``g`` the ground-truth membership (top ``size`` by relevance) and means over the ``n`` real candidates::

        q_i      = p_1^{k1}(i) p_2^{k2}(i)                              the cascade keeps i
        L_e2e    = (1/n) sum_i [-g_i log(q_i + eps) - (1 - g_i) log(1 - q_i + eps)]
        L_single = (1/n) sum_i [-g_i log(p_m^q(i) + eps) - (1 - g_i) log(1 - p_m^q(i) + eps)],  q = size,
                   for requests with more than ``size`` real candidates
        L = 0.5 / w_1^2 L_single(1) + 0.5 / w_2^2 L_single(2) + L_e2e + log|w_1 w_2|

    ``L_e2e`` is the cross-entropy of the lower bound ``q_i`` of item ``i``'s probability to survive both stages;
    ``L_single`` is each stage's own relaxed recall of the ground truth, which tightens that bound. The weights
    ``w_m`` are learned (uncertainty weighting, starting at 1). In the reference's two-stage code the cut-offs
    of ``L_e2e`` are both ``size`` (its configuration's 30 and 20 are overridden), so ``k1 = k2 = size`` by default.

    The reference takes ``log(w_1 w_2)``, NaN once a weight turns negative; ``log|w_1 w_2|`` has the same value
    and gradient for positive weights. Its means include padded slots and, for the labels, it reads a positional
    mask (the first ``n`` slots) although its padding is interleaved; here padding is left out exactly.

    Args:
        size: Ground-truth items per request.
        first_k: ``k1``, the first stage's cut-off in ``L_e2e`` (default ``size``).
        second_k: ``k2``, the second stage's cut-off in ``L_e2e`` (default ``size``).
        tau: Temperature of the relaxed sort (reference: 50).
        sort: ``neural_sort`` (reference) or ``soft_sort``.
        eps: Added inside the logarithms (reference: 1e-6).
    """

    def __init__(
        self,
        size: int = 10,
        first_k: int | None = None,
        second_k: int | None = None,
        tau: float = 50.0,
        sort: Literal["neural_sort", "soft_sort"] = "neural_sort",
        eps: float = 1e-6,
    ) -> None:
        super().__init__()
        self.size = size
        self.first_k = size if first_k is None else first_k
        self.second_k = size if second_k is None else second_k
        if min(self.size, self.first_k, self.second_k) < 1:
            raise ValueError(f"LCRONLoss: size, first_k and second_k must be >= 1, got {size}, {first_k}, {second_k}")
        if not tau > 0 or not eps > 0:
            raise ValueError(f"LCRONLoss: tau and eps must be > 0, got {tau} and {eps}")
        if sort not in ("neural_sort", "soft_sort"):
            raise ValueError(f"LCRONLoss: sort must be 'neural_sort' or 'soft_sort', got {sort!r}")
        self.tau, self.sort, self.eps = tau, sort, eps
        self.stage_weight = nn.Parameter(torch.ones(2))
        """The learned weights ``w_1, w_2`` of the two stages' ``L_single``."""

    def terms(self, first: Tensor, second: Tensor, relevance: Tensor, mask: Tensor) -> dict[str, Tensor]:
        """``e2e``, ``single_first`` and ``single_second``, each a mean over the requests it applies to."""
        relax = neural_sort if self.sort == "neural_sort" else soft_sort
        truth = ground_truth(relevance, mask, self.size)
        first_sort, second_sort = relax(first, mask, self.tau), relax(second, mask, self.tau)
        survive = top_k_probability(first_sort, mask, self.first_k) * top_k_probability(
            second_sort, mask, self.second_k
        )
        n = mask.sum(-1)
        rows, single_rows = (n > 0).to(first.dtype), (n > self.size).to(first.dtype)

        def mean(values: Tensor, weight: Tensor) -> Tensor:
            return (values * weight).sum() / weight.sum().clamp(min=1)

        return {
            "e2e": mean(survival_bce(survive, truth, mask, self.eps), rows),
            "single_first": mean(
                survival_bce(top_k_probability(first_sort, mask, self.size), truth, mask, self.eps), single_rows
            ),
            "single_second": mean(
                survival_bce(top_k_probability(second_sort, mask, self.size), truth, mask, self.eps), single_rows
            ),
        }

    def cascade_loss(self, first: Tensor, second: Tensor, relevance: Tensor, mask: Tensor) -> Tensor:
        """``L`` above."""
        terms = self.terms(first, second, relevance, mask)
        w_first, w_second = self.stage_weight[0], self.stage_weight[1]
        return (
            0.5 / w_first**2 * terms["single_first"]
            + 0.5 / w_second**2 * terms["single_second"]
            + terms["e2e"]
            + 0.5 * torch.log(w_first**2 * w_second**2)
        )
