"""Focal loss (Lin et al., 2017) as an stcrank loss plugin."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from stcrank.plugins import Loss


class FocalLoss(Loss):
    """Binary focal loss: BCE down-weighted by ``(1 - p_t) ** gamma`` on well-classified items.

    Args:
        gamma: Focusing parameter; 0 gives plain BCE.
    """

    def __init__(self, gamma: float = 2.0) -> None:
        super().__init__()
        self.gamma = gamma

    def forward(self, scores: Tensor, target: Tensor, mask: Tensor, weight: Tensor | None = None) -> Tensor:
        """Mean focal loss over the real (masked-in) items."""
        target = (target > 0).to(scores.dtype)
        bce = F.binary_cross_entropy_with_logits(scores, target, reduction="none")
        p_t = torch.exp(-bce)
        weights = mask.to(scores.dtype) * (weight if weight is not None else 1.0)
        return ((1 - p_t) ** self.gamma * bce * weights).sum() / weights.sum().clamp_min(1.0)
