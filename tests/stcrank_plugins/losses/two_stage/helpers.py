"""Shared inputs of the two-stage loss tests."""

from __future__ import annotations

import torch

RELEVANCE = [30.0, 7.0, 6.0, 5.0]
"""A ranking-stage top item, then one rank_neg, coarse_neg and prerank_neg (LCRON's grades)."""


def stacked(first, second, dtype=torch.float64, requires_grad=True):
    """``[1, 2, L]`` scores from two lists (float64 for exact hand values)."""
    scores = torch.tensor([[list(first), list(second)]], dtype=dtype)
    return scores.requires_grad_(requires_grad)


def with_padding(scores, relevance, mask, extra=2):
    """The same batch with ``extra`` padded slots holding NaN scores and a high relevance."""
    batch = scores.shape[0]
    pad_scores = torch.full((batch, 2, extra), float("nan"), dtype=scores.dtype)
    padded = torch.cat([scores.detach(), pad_scores], dim=-1).requires_grad_(True)
    padded_relevance = torch.cat([relevance, torch.full((batch, extra), 99.0, dtype=relevance.dtype)], dim=-1)
    padded_mask = torch.cat([mask, torch.zeros(batch, extra, dtype=torch.bool)], dim=-1)
    return padded, padded_relevance, padded_mask
