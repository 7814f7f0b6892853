"""Point-wise loss: binary cross-entropy on logits over the real items of a batch (entry point ``bce``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from stcrank.plugins import Loss

__all__ = ["BCELoss", "check_loss_inputs", "masked_bce_with_logits", "zero_loss"]


def check_loss_inputs(name: str, scores: Tensor, target: Tensor, mask: Tensor, weight: Tensor | None) -> None:
    """Validate the arguments of a :class:`~stcrank.plugins.Loss` and raise a clear error naming the loss.

    Args:
        name: The loss's name, used in the messages.
        scores: Logits, ``[B, L]``.
        target: Labels or priorities, ``[B, L]``.
        mask: Bool ``[B, L]``.
        weight: Optional per-item weights, ``[B, L]``.

    Raises:
        ValueError: On a shape or dtype mismatch, or NaN in ``target`` on a real item.
    """
    if scores.dim() != 2:
        raise ValueError(f"{name}: scores must be [B, L], got shape {tuple(scores.shape)}")
    if target.shape != scores.shape or mask.shape != scores.shape:
        raise ValueError(
            f"{name}: scores, target and mask must have the same shape; got {tuple(scores.shape)}, "
            f"{tuple(target.shape)}, {tuple(mask.shape)}"
        )
    if mask.dtype != torch.bool:
        raise ValueError(f"{name}: mask must be a bool tensor, got dtype {mask.dtype}")
    if weight is not None and weight.shape != scores.shape:
        raise ValueError(
            f"{name}: weight must have the shape of scores {tuple(scores.shape)}, got {tuple(weight.shape)}"
        )
    if target.is_floating_point() and bool((torch.isnan(target) & mask).any()):
        raise ValueError(f"{name}: target contains NaN on real items (mask True); expected finite labels")


def zero_loss(scores: Tensor) -> Tensor:
    """A zero scalar that is still part of the autograd graph of ``scores`` (backward works, gradient 0)."""
    return torch.nan_to_num(scores, nan=0.0, posinf=0.0, neginf=0.0).sum() * 0.0


def masked_bce_with_logits(
    scores: Tensor, target: Tensor, mask: Tensor, weight: Tensor | None = None, pos_weight: float | None = None
) -> Tensor:
    """Weighted mean binary cross-entropy with logits over the real items.

    ``L = sum_i m_i z_i BCE(s_i, y_i) / sum_i m_i z_i``, and ``0`` (with a gradient) when the denominator is 0.

    Args:
        scores: Logits, any shape.
        target: Labels in ``[0, 1]``, same shape.
        mask: Bool, same shape, ``True`` on items that enter the loss.
        weight: Optional non-negative per-item weights ``z``, same shape; ``None`` means 1.
        pos_weight: Optional weight of the positive term, as in :class:`torch.nn.BCEWithLogitsLoss`.

    Returns:
        A scalar tensor.
    """
    zeros = torch.zeros_like(scores)
    item_weight = mask.to(scores.dtype) if weight is None else torch.where(mask, weight.to(scores.dtype), zeros)
    # Padding may hold anything (NaN labels, inf scores): neutralise it before the element-wise loss.
    safe_target = torch.where(mask, target.to(scores.dtype), zeros)
    safe_scores = torch.where(mask, scores, zeros)
    pw = None if pos_weight is None else torch.tensor(pos_weight, dtype=scores.dtype, device=scores.device)
    losses = F.binary_cross_entropy_with_logits(safe_scores, safe_target, reduction="none", pos_weight=pw)
    total = item_weight.sum()
    if not bool(total > 0):
        return zero_loss(safe_scores)
    return (losses * item_weight).sum() / total


class BCELoss(Loss):
    """Point-wise binary cross-entropy on logits, averaged over the real items.

    ``L = sum_{b,i} m_bi z_bi BCE(s_bi, y_bi) / sum_{b,i} m_bi z_bi`` with
    ``BCE(s, y) = -[w_+ y log sigmoid(s) + (1 - y) log(1 - sigmoid(s))]``, where ``m`` is the mask, ``z`` the
    optional item weight and ``w_+`` the optional ``pos_weight``. When no item has positive weight (an empty
    batch or all-zero weights) the loss is ``0`` with a zero gradient instead of NaN.

    Args:
        pos_weight: Weight of the positive term (``None`` for 1), e.g. ``#neg / #pos`` to rebalance rare
            positives.
    """

    def __init__(self, pos_weight: float | None = None) -> None:
        super().__init__()
        if pos_weight is not None and not pos_weight > 0:
            raise ValueError(f"BCELoss: pos_weight must be positive, got {pos_weight}")
        self.pos_weight = pos_weight

    def forward(self, scores: Tensor, target: Tensor, mask: Tensor, weight: Tensor | None = None) -> Tensor:
        """Compute the loss.

        Args:
            scores: Logits, ``[B, L]``.
            target: Labels in ``[0, 1]``, ``[B, L]``.
            mask: Bool ``[B, L]``, ``True`` on real items.
            weight: Optional non-negative per-item weights, ``[B, L]``.

        Returns:
            A scalar tensor.

        Raises:
            ValueError: On mismatched shapes, or NaN / out-of-range labels on real items.
        """
        check_loss_inputs("BCELoss", scores, target, mask, weight)
        real = target[mask]
        if bool(((real < 0) | (real > 1)).any()):
            raise ValueError("BCELoss: target must be in [0, 1] on real items")
        return masked_bce_with_logits(scores, target, mask, weight, self.pos_weight)
