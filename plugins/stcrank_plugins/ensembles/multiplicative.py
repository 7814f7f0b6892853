"""Multiplicative ensemble: ``v = prod_t p_t ** w_t``, computed in log space."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from stcrank.plugins import Ensemble


class MultiplicativeEnsemble(Ensemble):
    """Weighted geometric combination of task probabilities, ``v = prod_t p_t ** w_t``.

    Computed as ``exp(sum_t w_t * log p_t)`` with probabilities clamped to ``[eps, 1]``, so a zero probability
    never produces ``nan`` through ``0 ** 0``.

    Args:
        weights: Exponent per task name.
        eps: Floor of each probability before the logarithm.
    """

    def __init__(self, weights: dict[str, float] | None = None, eps: float = 1e-12) -> None:
        self.weights = dict(weights if weights is not None else {"vtr": 1.0, "cvr": 1.0, "sdr": 1.0})
        if not self.weights:
            raise ValueError("MultiplicativeEnsemble needs at least one task weight")
        self.eps = eps

    @property
    def tasks(self) -> tuple[str, ...]:
        """The combined tasks."""
        return tuple(self.weights)

    def combine(self, predictions: Mapping[str, Tensor]) -> Tensor:
        """Return ``prod_t p_t ** w_t``."""
        log_value = sum(
            weight * torch.log(predictions[task].clamp(self.eps, 1.0)) for task, weight in self.weights.items()
        )
        return torch.exp(log_value)
