"""ICC (entry point ``icc``): a RankNet loss on the cascade's soft ensemble score (Gallagher et al., KDD 2019)."""

from __future__ import annotations

import torch
from torch import Tensor

from stcrank_plugins.losses.pairwise import gather_pairs, weighted_pair_mean
from stcrank_plugins.losses.two_stage.common import TwoStageLoss, kth_largest

__all__ = ["ICCLoss"]


class ICCLoss(TwoStageLoss):
    r"""Joint cascade training through one ensemble score and a pairwise loss on the relevance.

    Each stage's survival is relaxed by a logistic indicator around its cut-off, and the cascade's output is the
    score of the stage that drops the item::

        I_m(i) = sigmoid((s_m,i - kappa_m) / sigma),   kappa_m = the k_m-th largest s_m of the request
        f_i = (1 - I_1(i)) s1_i + I_1(i) I_2(i) s2_i
        L = sum_{i, j real, y_i > y_j} softplus(-(f_i - f_j)) / #pairs

    ``kappa_m`` is ``-inf`` (every item survives) when a request has fewer than ``k_m`` real candidates.

    As in the reference code both indicators cut at 30 by default: the second stage's indicator marks its top 30
    of the whole list, not its 20 of the first stage's 30. With ``second_k = 20`` the items that the first stage
    keeps and the second drops get ``f = 0``, and near the cut ``d f / d s2 = I2 + s2 I2'`` points the wrong way for
    negative logits: on a generated store the second stage then learns worse than random. The reference's loss
    is a BCE over every position pair ``i < j`` with label ``1[y_i > y_j]``, which also pushes equal-relevance
    pairs (and padding) apart in list order; here only pairs of real candidates with different relevance count.

    Args:
        first_k: Cut-off of the first stage's indicator (reference: 30).
        second_k: Cut-off of the second stage's indicator (reference: 30).
        sigma: Width of the logistic indicators (reference: 1e-3).
    """

    def __init__(self, first_k: int = 30, second_k: int = 30, sigma: float = 1e-3) -> None:
        super().__init__()
        if first_k < 1 or second_k < 1:
            raise ValueError(f"ICCLoss: first_k and second_k must be >= 1, got {first_k} and {second_k}")
        if not sigma > 0:
            raise ValueError(f"ICCLoss: sigma must be > 0, got {sigma}")
        self.first_k, self.second_k, self.sigma = first_k, second_k, sigma

    def ensemble(self, first: Tensor, second: Tensor, mask: Tensor) -> Tensor:
        """The cascade's soft ensemble score ``f`` of every candidate, ``[B, L]``."""
        survive_first = torch.sigmoid((first - kth_largest(first, mask, self.first_k)) / self.sigma)
        survive_second = torch.sigmoid((second - kth_largest(second, mask, self.second_k)) / self.sigma)
        return (1 - survive_first) * first + survive_first * survive_second * second

    def cascade_loss(self, first: Tensor, second: Tensor, relevance: Tensor, mask: Tensor) -> Tensor:
        """RankNet over every pair of real candidates of different relevance, on the ensemble score."""
        scores = self.ensemble(first, second, mask)
        pairs = gather_pairs(scores, relevance, mask, mask, lambda ti, tj: ti > tj)
        return weighted_pair_mean(pairs, scores)
