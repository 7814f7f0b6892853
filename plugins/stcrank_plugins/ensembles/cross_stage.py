"""Cross-stage look-ahead ranking score of the explore (E) stage (STCRank eq. 8-10)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from stcrank.plugins import Ensemble


class CrossStageLookaheadEnsemble(Ensemble):
    """``score_E = cvr_E + ctr * sdr_star * cvr_F_star``: direct conversion plus the value of the focus session.

    ``ctr`` is the explore-stage click probability, ``sdr_star`` the probability of swiping from the detail page
    into the focus feed, and ``cvr_F_star`` the probability of at least one purchase in that focus session. The
    product is taken in log space.

    Args:
        lookahead_weight: Weight of the look-ahead term (1 gives the paper's formula; 0 the point-wise E score).
        direct: Name of the direct-conversion prediction.
        factors: Names of the predictions whose product is the look-ahead value.
        eps: Floor of each factor before the logarithm.
    """

    def __init__(
        self,
        lookahead_weight: float = 1.0,
        direct: str = "cvr_e",
        factors: list[str] | None = None,
        eps: float = 1e-12,
    ) -> None:
        self.lookahead_weight = lookahead_weight
        self.direct = direct
        self.factors = list(factors or ["ctr", "sdr_star", "cvr_f_star"])
        self.eps = eps

    @property
    def tasks(self) -> tuple[str, ...]:
        """The direct-conversion prediction, then the look-ahead factors."""
        return (self.direct, *self.factors)

    def combine(self, predictions: Mapping[str, Tensor]) -> Tensor:
        """Return ``direct + lookahead_weight * prod(factors)``."""
        log_lookahead = sum(torch.log(predictions[name].clamp(self.eps, 1.0)) for name in self.factors)
        return predictions[self.direct] + self.lookahead_weight * torch.exp(log_lookahead)
