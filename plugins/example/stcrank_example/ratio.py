"""A one-pass heuristic re-ranker: sort by value per unit of exit probability."""

from __future__ import annotations

import torch
from torch import Tensor

from stcrank.plugins import Reranker


class RatioReranker(Reranker):
    """Show the ``k`` candidates with the highest ``value / (1 - continue_prob)``, in that order.

    This ordering is optimal for a *fixed* set of items (an exchange argument); choosing the set by the same
    ratio is a heuristic that ignores how much value an item itself carries.

    Args:
        eps: Floor of the exit probability, so a candidate that never ends the session gets a finite ratio.
    """

    def __init__(self, eps: float = 1e-6) -> None:
        self.eps = eps

    def rerank(self, value: Tensor, continue_prob: Tensor, k: int) -> Tensor:
        """Indices of the top-``k`` ratios, highest first (stable: ties keep the lower index first)."""
        ratio = value / (1 - continue_prob).clamp_min(self.eps)
        return torch.sort(ratio, dim=1, descending=True, stable=True).indices[:, :k]
