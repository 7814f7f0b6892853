"""Pair-wise logistic losses: the shared pair machinery and BPR (entry point ``bpr``).

Every pair-wise loss of this package compares items of the same row (list): a "higher" item ``i`` should score
above a "lower" item ``j``, with the logistic (RankNet / BPR) loss
``l_ij = softplus(-(s_i - s_j)) = -log sigmoid(s_i - s_j) = BCEWithLogits(s_i - s_j, 1)``.

:func:`gather_pairs` builds all such pairs without a ``[B, L, L]`` tensor when few items can be "higher": it
gathers the at most ``U`` candidate higher items of each row (``U`` = the largest count in the batch) and forms
``[B, U, L]`` pairs. With one positive against 200 negatives that is ``[B, 1, 201]`` rather than
``[B, 201, 201]``. Padded items (mask ``False``) never enter a pair.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from stcrank.plugins import Loss
from stcrank_plugins.losses.pointwise import check_loss_inputs, zero_loss

__all__ = ["BPRLoss", "PairBatch", "gather_pairs", "weighted_pair_mean"]


class PairBatch(NamedTuple):
    """All ordered (higher, lower) pairs of a batch, laid out ``[B, U, L]``."""

    loss: Tensor
    """``softplus(-(s_i - s_j))`` of each pair, ``0`` on invalid pairs, ``[B, U, L]``."""
    valid: Tensor
    """Bool ``[B, U, L]``: ``True`` where higher item ``u`` and lower item ``j`` form a pair."""
    upper_target: Tensor
    """Target (label or priority) of each gathered higher item, ``[B, U]``."""
    upper_weight: Tensor
    """Sample weight of each gathered higher item (``1`` without weights), ``[B, U]``."""


def gather_pairs(
    scores: Tensor,
    target: Tensor,
    mask: Tensor,
    upper: Tensor,
    rule: Callable[[Tensor, Tensor], Tensor],
    weight: Tensor | None = None,
) -> PairBatch:
    """Form every valid (higher, lower) pair of each row.

    Args:
        scores: Logits, ``[B, L]``; padded entries are ignored (they may be NaN or infinite).
        target: Labels or priorities, ``[B, L]``.
        mask: Bool ``[B, L]``, ``True`` on real items.
        upper: Bool ``[B, L]``, ``True`` on real items that may be the higher item of a pair.
        rule: ``rule(t_i, t_j)`` broadcasts a ``[B, U, 1]`` higher target against a ``[B, 1, L]`` lower target
            and returns where ``i`` must outrank ``j``; it must be ``False`` for equal targets (so an item is
            never paired with itself).
        weight: Optional per-item sample weights, ``[B, L]``.

    Returns:
        The pairs; ``U`` is 0 when no row has a higher item.
    """
    zeros = torch.zeros_like(scores)
    # Neutralise padding so NaN/inf there cannot leak into values or gradients through torch.where.
    safe_scores = torch.where(mask, scores, zeros)
    safe_weight = torch.ones_like(scores) if weight is None else torch.where(mask, weight.to(scores.dtype), zeros)
    upper = upper & mask
    width = int(upper.sum(dim=1).max()) if upper.numel() else 0
    order = torch.argsort(upper.to(torch.uint8), dim=1, descending=True, stable=True)[:, :width]
    upper_valid = upper.gather(1, order)
    upper_scores = safe_scores.gather(1, order)
    upper_target = target.gather(1, order)
    upper_weight = torch.where(upper_valid, safe_weight.gather(1, order), torch.zeros_like(upper_scores))

    valid = upper_valid.unsqueeze(2) & mask.unsqueeze(1) & rule(upper_target.unsqueeze(2), target.unsqueeze(1))
    diff = upper_scores.unsqueeze(2) - safe_scores.unsqueeze(1)
    loss = torch.where(valid, F.softplus(-diff), torch.zeros_like(diff))
    return PairBatch(loss=loss, valid=valid, upper_target=upper_target, upper_weight=upper_weight)


def weighted_pair_mean(pairs: PairBatch, scores: Tensor, level_weight: Tensor | None = None) -> Tensor:
    """``sum c_ij a_i l_ij / sum c_ij`` over valid pairs, ``c_ij`` = sample weight of ``i``, ``a_i`` = level weight.

    Args:
        pairs: Output of :func:`gather_pairs`.
        scores: The logits the pairs came from (for a graph-connected zero when there is no pair).
        level_weight: Optional extra weight of each higher item, ``[B, U]``; it scales the numerator only.

    Returns:
        A scalar tensor, ``0`` (with a gradient) when no pair has positive weight.
    """
    pair_weight = pairs.valid.to(pairs.loss.dtype) * pairs.upper_weight.unsqueeze(2)
    total = pair_weight.sum()
    if not bool(total > 0):
        return zero_loss(scores)
    numerator_weight = pair_weight if level_weight is None else pair_weight * level_weight.unsqueeze(2)
    return (numerator_weight * pairs.loss).sum() / total


class BPRLoss(Loss):
    """Bayesian personalised ranking: every positive of a row against every negative of the same row.

    ``L = sum_{b} sum_{i: y_bi > 0} sum_{j: y_bj = 0} z_bi * softplus(-(s_bi - s_bj)) / sum z_bi [pair]`` over real
    items (mask ``True``), i.e. ``-mean log sigmoid(s_pos - s_neg)`` over valid pairs (``z`` = optional sample
    weight of the positive, 1 by default). For a retrieval batch with the positive in column 0 and sampled
    negatives in the other columns this is exactly SASRec's BPR loss. A batch without any pair gives ``0`` with a
    gradient.
    """

    compares_items = True

    def forward(self, scores: Tensor, target: Tensor, mask: Tensor, weight: Tensor | None = None) -> Tensor:
        """Compute the loss.

        Args:
            scores: Logits, ``[B, L]``.
            target: ``> 0`` on positives, ``0`` on negatives, ``[B, L]``.
            mask: Bool ``[B, L]``, ``True`` on real items.
            weight: Optional per-item sample weights, ``[B, L]`` (the positive's weight weighs its pairs).

        Returns:
            A scalar tensor.

        Raises:
            ValueError: On mismatched shapes or NaN labels on real items.
        """
        check_loss_inputs("BPRLoss", scores, target, mask, weight)
        pairs = gather_pairs(scores, target, mask, mask & (target > 0), lambda ti, tj: (ti > 0) & (tj == 0), weight)
        return weighted_pair_mean(pairs, scores)
