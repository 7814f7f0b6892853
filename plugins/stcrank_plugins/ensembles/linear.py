"""Linear additive ensemble (STCRank eq. 2): ``v = sum_t w_t * p_t``."""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from stcrank.plugins import Ensemble


class LinearEnsemble(Ensemble):
    """Weighted sum of task probabilities, ``v = w_vtr * vtr + w_cvr * cvr + w_sdr * sdr`` by default.

    AUC and any ranking are invariant to a positive rescaling of ``v``, so one weight can be fixed (to 1) when
    tuning.

    Args:
        weights: Weight per task name; every named task must be predicted.
    """

    def __init__(self, weights: dict[str, float] | None = None) -> None:
        self.weights = dict(weights if weights is not None else {"vtr": 1.0, "cvr": 1.0, "sdr": 1.0})
        if not self.weights:
            raise ValueError("LinearEnsemble needs at least one task weight")

    @property
    def tasks(self) -> tuple[str, ...]:
        """The weighted tasks."""
        return tuple(self.weights)

    def combine(self, predictions: Mapping[str, Tensor]) -> Tensor:
        """Return ``sum_t w_t * p_t``."""
        return sum(weight * predictions[task] for task, weight in self.weights.items())
