"""Differentiable sorting: relaxed permutation matrices of padded score lists, and the label permutation.

A permutation matrix ``P`` of a list of ``n`` scores has one row per rank and one column per item: ``P[r, i]`` is
(the relaxed) probability that item ``i`` is at rank ``r`` (0 = highest score). Both relaxations are
row-stochastic and tend to the hard sorting permutation as ``tau -> 0``:

* **NeuralSort** (Grover et al., ICLR 2019), with ranks ``r = 1..n``:
  ``P[r, :] = softmax(((n + 1 - 2r) s - A_s 1) / tau)``, ``A_s[i, j] = |s_i - s_j|``.
* **SoftSort** (Prillo and Eisenschlos, ICML 2020): ``P[r, :] = softmax(-|sort(s)_r - s| / tau)``.

Padding is handled exactly: each row uses its own ``n`` (the number of real items), ``A_s 1`` sums over real items
only, padded items get probability 0 in every row, and the rows of ranks ``r >= n`` are all 0. The matrices of a
row are therefore those of its real items alone.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["label_permutation", "neural_sort", "soft_sort", "top_k_probability"]


def _finish(logits: Tensor, mask: Tensor) -> Tensor:
    """Softmax over real columns, rows of ranks beyond each list's length set to 0."""
    width = mask.shape[-1]
    logits = logits.masked_fill(~mask.unsqueeze(1), torch.finfo(logits.dtype).min)
    probabilities = torch.softmax(logits, dim=-1)
    rows = torch.arange(width, device=mask.device).view(1, width, 1) < mask.sum(-1).view(-1, 1, 1)
    return probabilities * rows.to(probabilities.dtype)


def neural_sort(scores: Tensor, mask: Tensor, tau: float) -> Tensor:
    """NeuralSort's relaxed sorting permutation (descending) of each padded row.

    Args:
        scores: ``[B, L]``.
        mask: Bool ``[B, L]``, ``True`` on real items.
        tau: Temperature, > 0.

    Returns:
        ``[B, L, L]``: rank ``r`` by item ``i``.
    """
    if not tau > 0:
        raise ValueError(f"neural_sort: tau must be > 0, got {tau}")
    s = torch.where(mask, scores, torch.zeros_like(scores))
    n = mask.sum(-1, keepdim=True).to(s.dtype)  # [B, 1]
    real = mask.to(s.dtype).unsqueeze(1)  # [B, 1, L]: item j counts
    spread = ((s.unsqueeze(2) - s.unsqueeze(1)).abs() * real).sum(-1)  # [B, L]: sum_j |s_i - s_j|
    rank = torch.arange(1, scores.shape[-1] + 1, device=s.device, dtype=s.dtype)  # [L]
    scale = n + 1 - 2 * rank  # [B, L]: one factor per rank row
    logits = (scale.unsqueeze(2) * s.unsqueeze(1) - spread.unsqueeze(1)) / tau
    return _finish(logits, mask)


def soft_sort(scores: Tensor, mask: Tensor, tau: float) -> Tensor:
    """SoftSort's relaxed sorting permutation (descending) of each padded row.

    Args:
        scores: ``[B, L]``.
        mask: Bool ``[B, L]``.
        tau: Temperature, > 0.

    Returns:
        ``[B, L, L]``: rank ``r`` by item ``i``.
    """
    if not tau > 0:
        raise ValueError(f"soft_sort: tau must be > 0, got {tau}")
    s = torch.where(mask, scores, torch.zeros_like(scores))
    ordered = torch.sort(torch.where(mask, s, torch.full_like(s, -torch.inf)), dim=-1, descending=True).values
    ordered = torch.where(torch.isfinite(ordered), ordered, torch.zeros_like(ordered))  # rows beyond n, zeroed below
    logits = -(ordered.unsqueeze(2) - s.unsqueeze(1)).abs() / tau
    return _finish(logits, mask)


def label_permutation(relevance: Tensor, mask: Tensor) -> Tensor:
    """The sorting permutation of the relevance itself (descending), sharing each tie's ranks equally.

    Item ``i`` with ``a_i`` real items of strictly higher relevance and ``t_i`` of equal relevance (itself
    included) occupies ranks ``a_i .. a_i + t_i - 1``, each with probability ``1 / t_i``: the limit of NeuralSort
    of the labels as ``tau -> 0``, which the reference code computes with ``tau = 1e-4``.

    Args:
        relevance: ``[B, L]``.
        mask: Bool ``[B, L]``.

    Returns:
        ``[B, L, L]``, doubly stochastic over the real items.
    """
    y = torch.where(mask, relevance, torch.zeros_like(relevance))
    real = mask.unsqueeze(1)
    above = ((y.unsqueeze(1) > y.unsqueeze(2)) & real).sum(-1)  # [B, L]
    tied = ((y.unsqueeze(1) == y.unsqueeze(2)) & real).sum(-1).clamp(min=1)
    rank = torch.arange(relevance.shape[-1], device=relevance.device).view(1, -1, 1)  # rows
    inside = (rank >= above.unsqueeze(1)) & (rank < (above + tied).unsqueeze(1)) & mask.unsqueeze(1)
    return inside.to(relevance.dtype) / tied.unsqueeze(1).to(relevance.dtype)


def top_k_probability(permutation: Tensor, mask: Tensor, k: int) -> Tensor:
    """Relaxed probability that each item is among the top ``k``: ``sum_{r<k} P[r, i] / sum_r P[r, i]``.

    NeuralSort and SoftSort matrices are row- but not column-stochastic, so each column is normalised by its
    sum, which is treated as a constant (no gradient), as in LCRON's code.

    Args:
        permutation: ``[B, L, L]`` from :func:`neural_sort` or :func:`soft_sort`.
        mask: Bool ``[B, L]``.
        k: The cut-off.

    Returns:
        ``[B, L]`` in ``[0, 1]``, 0 on padding.
    """
    top = permutation[:, :k, :].sum(1)
    total = permutation.detach().sum(1)
    share = top / total.clamp(min=1e-12)
    return torch.where(mask, share, torch.zeros_like(share))
