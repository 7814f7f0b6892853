"""ARF (entry point ``arf``): each stage learns to hold the ground truth in its kept set, through NeuralSort."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from stcrank.metrics.cascade import ground_truth
from stcrank_plugins.losses.two_stage.common import TwoStageLoss
from stcrank_plugins.losses.two_stage.sorting import label_permutation, neural_sort

__all__ = ["ARFLoss", "arf_terms"]


def arf_terms(
    scores: Tensor, relevance: Tensor, mask: Tensor, size: int, support: int, tau: float, eps: float
) -> tuple[Tensor, Tensor]:
    """ARF's relaxed-recall and global terms of one stage, each a mean over the requests it applies to.

    Args:
        scores: The stage's logits, ``[B, L]``.
        relevance: ``[B, L]``.
        mask: Bool ``[B, L]``.
        size: Ground-truth items per request.
        support: Items the stage keeps.
        tau: NeuralSort temperature.
        eps: Added inside every logarithm.

    Returns:
        ``(relax, global)``: ``relax`` over requests with more than ``support`` real candidates, ``global`` over
        requests with at least one.
    """
    permutation = neural_sort(scores, mask, tau)  # [B, L, L]
    truth = ground_truth(relevance, mask, size)
    n = mask.sum(-1).to(scores.dtype)
    kept = permutation[:, :support, :].sum(1) / support  # mean over the kept ranks
    relax = (truth * -torch.log(kept + eps)).sum(-1) / n.clamp(min=1)
    labels = label_permutation(relevance, mask)
    global_ = (labels * -torch.log(permutation + eps)).sum((-2, -1)) / (n * n).clamp(min=1)
    relax_rows = (n > support).to(scores.dtype)
    global_rows = (n > 0).to(scores.dtype)
    return (
        (relax * relax_rows).sum() / relax_rows.sum().clamp(min=1),
        (global_ * global_rows).sum() / global_rows.sum().clamp(min=1),
    )


class ARFLoss(TwoStageLoss):
    r"""ARF (Wang et al., 2024), one per stage: the relaxed recall of the kept set plus a learned-weight listwise term.

    For a stage with logits ``s``, NeuralSort matrix ``P = NeuralSort(s; tau)``, ground-truth membership ``g`` (top
    ``size`` by relevance) and the relevance's own permutation ``P_y`` (ties share their ranks), over the ``n``
    real candidates of a request::

        L_relax  = (1/n) sum_i g_i (-log((1/m) sum_{r<m} P[r, i] + eps))     requests with n > m
        L_global = (1/n^2) sum_{r, i} P_y[r, i] (-log(P[r, i] + eps))
        L_stage  = 0.5 / w^2 L_global + L_relax + log|w|                      w learned, starting at 1

    with ``m`` the stage's kept count (30 for the first stage, 20 for the second). ``L = L_stage1 + L_stage2``,
    each stage with its own ``w``. The reference computes ``L_global`` only for complete 40-item lists and its
    means over padded slots and over every request of the batch; here both are over real candidates and over
    the requests each term applies to.

    Args:
        size: Ground-truth items per request.
        first_k: Items the first stage keeps.
        second_k: Items the second stage keeps.
        tau: NeuralSort temperature (reference: 200).
        eps: Added inside the logarithms (reference: 1e-6).
    """

    def __init__(
        self, size: int = 10, first_k: int = 30, second_k: int = 20, tau: float = 200.0, eps: float = 1e-6
    ) -> None:
        super().__init__()
        if min(size, first_k, second_k) < 1:
            raise ValueError(f"ARFLoss: size, first_k and second_k must be >= 1, got {size}, {first_k}, {second_k}")
        if not tau > 0 or not eps > 0:
            raise ValueError(f"ARFLoss: tau and eps must be > 0, got {tau} and {eps}")
        self.size, self.first_k, self.second_k, self.tau, self.eps = size, first_k, second_k, tau, eps
        self.global_weight = nn.Parameter(torch.ones(2))
        """The learned weights ``w`` of the first and second stage's global term."""

    def cascade_loss(self, first: Tensor, second: Tensor, relevance: Tensor, mask: Tensor) -> Tensor:
        """Both stages' ARF losses, added."""
        total = first.new_zeros(())
        for stage, (scores, support) in enumerate(((first, self.first_k), (second, self.second_k))):
            relax, global_ = arf_terms(scores, relevance, mask, self.size, support, self.tau, self.eps)
            weight = self.global_weight[stage]
            total = total + 0.5 / weight**2 * global_ + relax + 0.5 * torch.log(weight**2)
        return total
