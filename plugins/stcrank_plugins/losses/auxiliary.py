"""Point-wise BCE plus an auxiliary ranking term against same-request stage items (entry point ``aux_ranking``).

This is Eq. 2 of the RecFlow paper's appendix (A.5, A.7): a CTR model keeps its BCE loss on exposures, and each
positive exposure is additionally pushed above the stage samples (rerank/rank/coarse items) of its own request
with a BPR term. The stage items enter the auxiliary term only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from stcrank.plugins import Loss
from stcrank_plugins.losses.pointwise import check_loss_inputs, masked_bce_with_logits, zero_loss

__all__ = ["AuxiliaryRankingLoss"]


class AuxiliaryRankingLoss(Loss):
    r"""BCE on the exposure plus ``alpha`` times BPR of positive exposures against their request's stage items.

    Each row is one exposure followed by ``K`` stage items of the same request: column 0 holds the exposure's
    logit ``s_b0`` and label ``y_b``; columns ``1..K`` hold the stage items' logits ``s_bj`` (their targets are
    ignored) and ``mask`` is ``True`` on real stage items. With optional exposure weights ``z_b``::

        L = sum_b m_b0 z_b BCE(s_b0, y_b) / sum_b m_b0 z_b
            + alpha * sum_b m_b0 z_b y_b sum_j m_bj softplus(-(s_b0 - s_bj))
                    / sum_b m_b0 z_b y_b sum_j m_bj

    A term whose denominator is 0 (no real exposure; no positive exposure with a real stage item) is 0, so with
    0/1 labels and weights the second denominator acts as ``max(1, N_+ K)``.

    With every exposure and stage slot real and no weights this is exactly Eq. 2 of the RecFlow paper
    (``1/N sum_i BCE + alpha/(N_+ K) sum_j sum_k BPR(o_j, o_jk)``). Unlike the reference code, missing stage
    items are excluded from both the sum and the denominator (the reference scores them ``-2^30`` and counts
    them), and the mask is defined on real stage rows (the reference reads the stage items' own
    ``effective_view``, which can silence the term).

    Models whose auxiliary term uses another scorer (RecFlow's DIN variant, with a separate two-tower) call
    :meth:`pointwise_term` and :meth:`ranking_term` on the two sets of logits.

    Args:
        alpha: Weight of the auxiliary ranking term (RecFlow: 0.1).
    """

    compares_items = True

    def __init__(self, alpha: float = 0.1) -> None:
        super().__init__()
        if not alpha >= 0:
            raise ValueError(f"AuxiliaryRankingLoss: alpha must be non-negative, got {alpha}")
        self.alpha = alpha

    @staticmethod
    def _check(scores: Tensor, target: Tensor, mask: Tensor, weight: Tensor | None) -> None:
        # Only the exposure's label is read: stage items' targets may hold anything.
        exposure_only = torch.zeros_like(mask)
        exposure_only[:, :1] = mask[:, :1]
        check_loss_inputs("AuxiliaryRankingLoss", scores, target, exposure_only, weight)
        if scores.shape[1] < 1:
            raise ValueError("AuxiliaryRankingLoss: scores must have the exposure in column 0, got 0 columns")
        labels = target[:, 0][mask[:, 0]]
        if bool(((labels < 0) | (labels > 1)).any()):
            raise ValueError("AuxiliaryRankingLoss: the exposure label (target[:, 0]) must be in [0, 1]")

    def pointwise_term(self, scores: Tensor, target: Tensor, mask: Tensor, weight: Tensor | None = None) -> Tensor:
        """The BCE term on column 0.

        Args:
            scores: Logits ``[B, 1 + K]`` (only column 0 is read).
            target: ``[B, 1 + K]``, the exposure label in column 0.
            mask: Bool ``[B, 1 + K]``; column 0 marks real exposures.
            weight: Optional per-item weights; column 0 weighs the exposure.

        Returns:
            A scalar tensor.
        """
        self._check(scores, target, mask, weight)
        return self._pointwise(scores, target, mask, weight)

    @staticmethod
    def _pointwise(scores: Tensor, target: Tensor, mask: Tensor, weight: Tensor | None) -> Tensor:
        column_weight = None if weight is None else weight[:, :1]
        return masked_bce_with_logits(scores[:, :1], target[:, :1], mask[:, :1], column_weight)

    def ranking_term(self, scores: Tensor, target: Tensor, mask: Tensor, weight: Tensor | None = None) -> Tensor:
        """The auxiliary BPR term: positive exposures (column 0) against real stage items (columns 1..K).

        Args:
            scores: Logits ``[B, 1 + K]``.
            target: ``[B, 1 + K]``, the exposure label in column 0 (it weighs the row's pairs).
            mask: Bool ``[B, 1 + K]``.
            weight: Optional per-item weights; column 0 weighs the row's pairs.

        Returns:
            A scalar tensor, ``0`` with a gradient when there is no positive exposure with a stage item.
        """
        self._check(scores, target, mask, weight)
        return self._ranking(scores, target, mask, weight)

    @staticmethod
    def _ranking(scores: Tensor, target: Tensor, mask: Tensor, weight: Tensor | None) -> Tensor:
        exposure = mask[:, 0]
        zeros = torch.zeros_like(scores[:, 0])
        row_weight = torch.where(exposure, target[:, 0].to(scores.dtype), zeros)
        if weight is not None:
            row_weight = row_weight * torch.where(exposure, weight[:, 0].to(scores.dtype), zeros)
        stage = mask[:, 1:]
        # Neutralise padding so NaN/inf there cannot leak into values or gradients.
        exposure_score = torch.where(exposure, scores[:, 0], zeros)
        stage_scores = torch.where(stage, scores[:, 1:], torch.zeros_like(scores[:, 1:]))
        pair_loss = F.softplus(-(exposure_score.unsqueeze(1) - stage_scores))
        pair_weight = row_weight.unsqueeze(1) * stage.to(scores.dtype)
        total = pair_weight.sum()
        if not bool(total > 0):
            return zero_loss(exposure_score)
        # total >= 1 whenever labels and weights are 0/1, so this is the max(1, .) guard of the formula.
        return (pair_weight * pair_loss).sum() / total

    def forward(self, scores: Tensor, target: Tensor, mask: Tensor, weight: Tensor | None = None) -> Tensor:
        """Compute ``pointwise_term + alpha * ranking_term``.

        Args:
            scores: Logits ``[B, 1 + K]``: the exposure in column 0, its request's stage items after.
            target: ``[B, 1 + K]``: the exposure's 0/1 label in column 0; other columns are ignored.
            mask: Bool ``[B, 1 + K]``: column 0 marks real exposures, columns ``1..K`` real stage items.
            weight: Optional per-item weights; only column 0 (the exposure's weight) is used.

        Returns:
            A scalar tensor.

        Raises:
            ValueError: On mismatched shapes, or a NaN / out-of-range exposure label.
        """
        self._check(scores, target, mask, weight)
        loss = self._pointwise(scores, target, mask, weight)
        if self.alpha == 0 or scores.shape[1] == 1:
            return loss
        return loss + self.alpha * self._ranking(scores, target, mask, weight)
