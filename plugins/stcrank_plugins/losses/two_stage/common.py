"""The contract of the two-stage cascade losses and what they share: input checks, stage levels, ground truth.

A two-stage loss is called like every :class:`~stcrank.plugins.Loss`, ``loss(scores, target, mask)``, with

* ``scores``: ``[B, 2, L]``, the first stage's (retrieval) logits in ``scores[:, 0]`` and the second stage's
  (pre-rank) in ``scores[:, 1]``, for the same ``L`` candidates of each request;
* ``target``: ``[B, L]``, each candidate's graded relevance (LCRON's: ``30 - rank_index`` for the ranking
  stage's top items, 7 for ``rank_neg``, 6 for ``coarse_neg``, 5 for ``prerank_neg``);
* ``mask``: bool ``[B, L]``, ``True`` on real candidates. Padding never enters a loss, whatever it holds.

Two readings of the relevance serve the losses:

* the **ground truth** of a request, its top ``size`` candidates by relevance (a tie across the boundary shares
  the remaining places, see :func:`stcrank.metrics.cascade.ground_truth`): what LCRON and ARF optimise;
* the **stage level** of a candidate, the number of ``negative_grades`` below its relevance: with LCRON's
  grades ``(5, 6, 7)``, ``prerank_neg`` is level 0, ``coarse_neg`` 1, ``rank_neg`` 2 and the ranking stage's top
  items 3. BCE, RankFlow and FS-RankNet learn these stage blocks, as in the reference code.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence

import torch
from torch import Tensor

from stcrank.plugins import Loss

__all__ = ["LCRON_NEGATIVE_GRADES", "TwoStageLoss", "kth_largest", "masked_mean", "stage_levels", "top_k_mask"]

LCRON_NEGATIVE_GRADES: tuple[float, ...] = (5.0, 6.0, 7.0)
"""Relevance of ``prerank_neg``, ``coarse_neg`` and ``rank_neg`` candidates in LCRON's grading."""


def stage_levels(relevance: Tensor, mask: Tensor, negative_grades: Sequence[float]) -> Tensor:
    """The stage level of each candidate: how many of ``negative_grades`` lie strictly below its relevance.

    Args:
        relevance: ``[B, L]``.
        mask: Bool ``[B, L]``.
        negative_grades: The grades of the negative stages, any order.

    Returns:
        Long ``[B, L]``, 0 on padding; ``len(negative_grades)`` is the positive (top) level.
    """
    grades = torch.tensor(sorted(negative_grades), dtype=relevance.dtype, device=relevance.device)
    levels = (relevance.unsqueeze(-1) > grades).sum(-1)
    return torch.where(mask, levels, torch.zeros_like(levels))


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values`` where ``mask`` is True, ``0`` (still part of the graph) when nothing is selected."""
    weight = mask.to(values.dtype)
    safe = torch.where(mask, values, torch.zeros_like(values))
    return (safe * weight).sum() / weight.sum().clamp(min=1.0)


def kth_largest(scores: Tensor, mask: Tensor, k: int) -> Tensor:
    """The ``k``-th largest real score of each row, ``-inf`` where a row has fewer than ``k`` real candidates.

    Args:
        scores: ``[B, L]``.
        mask: Bool ``[B, L]``.
        k: Which order statistic (1 is the largest).

    Returns:
        ``[B, 1]``; differentiable with respect to the selected score.
    """
    width = min(k, scores.shape[-1])
    masked = torch.where(mask, scores, torch.full_like(scores, -torch.inf))
    value = torch.topk(masked, width, dim=-1).values[:, width - 1 : width]
    enough = mask.sum(-1, keepdim=True) >= k
    return torch.where(enough, value, torch.full_like(value, -torch.inf))


def top_k_mask(scores: Tensor, mask: Tensor, k: int, largest: bool = True) -> Tensor:
    """Bool ``[B, L]``: the ``k`` real candidates of highest (``largest``) or lowest score of each row.

    Rows with fewer than ``k`` real candidates select all of them. Equal scores are taken in column order.
    """
    width = min(k, scores.shape[-1])
    fill = -torch.inf if largest else torch.inf
    masked = torch.where(mask, scores.detach(), torch.full_like(scores, fill))
    index = torch.topk(masked, width, dim=-1, largest=largest, sorted=False).indices
    chosen = torch.zeros_like(mask).scatter(-1, index, True)
    return chosen & mask


class TwoStageLoss(Loss):
    """Base of the two-stage cascade losses (see the module docstring for the inputs)."""

    name: str = "TwoStageLoss"

    def forward(self, scores: Tensor, target: Tensor, mask: Tensor, weight: Tensor | None = None) -> Tensor:
        """Check the inputs and compute :meth:`cascade_loss`.

        Args:
            scores: ``[B, 2, L]``: first-stage (retrieval) logits, then second-stage (pre-rank) logits.
            target: Graded relevance, ``[B, L]``.
            mask: Bool ``[B, L]``, ``True`` on real candidates.
            weight: Not supported (must be None): the benchmark has no sample weights.

        Returns:
            A scalar tensor.

        Raises:
            ValueError: On mismatched shapes, a non-bool mask, NaN relevance or scores on real candidates, or a
                weight.
        """
        name = type(self).__name__
        if weight is not None:
            raise ValueError(f"{name}: two-stage losses take no sample weights; pass weight=None")
        if scores.dim() != 3 or scores.shape[1] != 2:
            raise ValueError(f"{name}: scores must be [B, 2, L] (first stage, second stage), got {tuple(scores.shape)}")
        if target.shape != (scores.shape[0], scores.shape[2]) or mask.shape != target.shape:
            raise ValueError(
                f"{name}: target and mask must be [B, L] = {(scores.shape[0], scores.shape[2])}; got "
                f"{tuple(target.shape)} and {tuple(mask.shape)}"
            )
        if mask.dtype != torch.bool:
            raise ValueError(f"{name}: mask must be a bool tensor, got dtype {mask.dtype}")
        if bool(torch.isnan(target[mask]).any()):
            raise ValueError(f"{name}: target (relevance) holds NaN on real candidates (mask True)")
        if bool(torch.isnan(scores.detach().transpose(0, 1)[:, mask]).any()):
            raise ValueError(f"{name}: scores hold NaN on real candidates (mask True)")
        # Padding may hold anything (NaN, inf): neutralise it so that nothing leaks into values or gradients.
        safe = torch.where(mask.unsqueeze(1), scores, torch.zeros_like(scores))
        relevance = torch.where(mask, target.to(scores.dtype), torch.zeros_like(safe[:, 0]))
        return self.cascade_loss(safe[:, 0], safe[:, 1], relevance, mask)

    @abstractmethod
    def cascade_loss(self, first: Tensor, second: Tensor, relevance: Tensor, mask: Tensor) -> Tensor:
        """The loss of checked inputs.

        Args:
            first: First-stage logits ``[B, L]`` (0 on padding).
            second: Second-stage logits ``[B, L]`` (0 on padding).
            relevance: Graded relevance ``[B, L]`` (0 on padding).
            mask: Bool ``[B, L]``.

        Returns:
            A scalar tensor.
        """
