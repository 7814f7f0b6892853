"""ESMM-style factorised model of the explore (E) stage: conditional factors trained through their products.

The cross-stage look-ahead value of a homepage exposure (STCRank eq. 9) is ``ctr * sdr_star * cvr_f_star``:
click, swipe from the detail page into the focus feed given a click, and at least one focus-stage purchase
given the swipe. Only the first factor is defined on every exposure; the others live on ever smaller
sub-populations (clicked, swiped). As in ESMM, every factor gets a head, and the loss is put on the
*products*, whose labels exist for every exposure: ``y_click``, ``y_click * y_swipe`` and
``y_click * y_swipe * y_Fconv`` (plus ``y_click * y_purchase`` for the direct detail-page conversion
``cvr_e = ctr * cvr_detail``). The factors are then defined on the whole exposure space.

Products are computed in log space, ``log p = sum_f log sigmoid(z_f)``, and turned into their exact logit
``log p - log(1 - p)`` (:func:`product_logit`), so the binary cross-entropy with logits of a product head is the
BCE of the product probability, stable for products near 0 and near 1.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from stcrank.models.mmoe import DEFAULT_CATEGORICAL, MMoE

E_CATEGORICAL: tuple[str, ...] = tuple(name for name in DEFAULT_CATEGORICAL if not name.startswith("trigger_"))
"""Categorical columns of the E log embedded by default (profile and shown item)."""

DEFAULT_PRODUCTS: dict[str, list[str]] = {
    "ctr": ["ctr"],
    "ctr_sdr": ["ctr", "sdr_star"],
    "ctr_sdr_cvrf": ["ctr", "sdr_star", "cvr_f_star"],
    "cvr_e": ["ctr", "cvr_detail"],
}
"""Product heads (trained) -> their factors (served): click, click-and-swipe, click-swipe-and-F-purchase, and
click-and-detail-page purchase (the direct E-stage conversion ``cvr_e``)."""

_LOG_HALF = -math.log(2.0)


def log1mexp(log_p: Tensor) -> Tensor:
    """``log(1 - exp(x))`` for ``x <= 0``, accurate at both ends (Maechler's two-branch formula).

    Args:
        log_p: Log-probabilities, ``<= 0``.

    Returns:
        ``log(1 - p)``, of the same shape (``-inf`` at ``x = 0``).
    """
    return torch.where(log_p > _LOG_HALF, torch.log(-torch.expm1(log_p)), torch.log1p(-torch.exp(log_p)))


def product_log_prob(logits: list[Tensor]) -> Tensor:
    """Log of the product of the factors' probabilities: ``sum_f log sigmoid(z_f)``.

    Args:
        logits: Factor logits, all of one shape.

    Returns:
        ``log prod_f sigmoid(z_f)``.
    """
    if not logits:
        raise ValueError("a product needs at least one factor")
    return torch.stack([F.logsigmoid(z) for z in logits]).sum(0)


def product_logit(log_p: Tensor) -> Tensor:
    """The exact logit ``log p - log(1 - p)`` of a probability given by its logarithm.

    ``log p`` is capped just below 0 (a product of sigmoids is never exactly 1, but it rounds to 1 once every
    factor logit is beyond ~17 in float32), so the logit stays finite.

    Args:
        log_p: Log-probabilities, ``<= 0``.

    Returns:
        Logits; ``binary_cross_entropy_with_logits`` on them is the BCE of ``p``.
    """
    cap = -torch.finfo(log_p.dtype).eps
    log_p = log_p.clamp(max=cap)
    return log_p - log1mexp(log_p)


class ESMM(nn.Module):
    """Factor heads on a shared MMoE; one trained output per product of factors.

    The backbone is :class:`~stcrank.models.mmoe.MMoE` with one head per factor. Homepage exposures have no
    trigger item; the user's profile category (``user_segment``) takes the trigger's place in the MMoE's
    category interaction, so the network sees whether the shown item is in the user's favourite category.

    Args:
        feature_sizes: Embedding-table size (padding row included) of every categorical column.
        products: Product head -> its factor names; :data:`DEFAULT_PRODUCTS` when None. The product heads are
            the network's ``tasks`` (each needs a ``label_<head>`` in the batch).
        embedding_dim: Width of every embedding.
        num_experts: Number of experts.
        expert_hidden: Widths of each expert MLP.
        tower_hidden: Widths of each factor tower.
        categorical: Categorical columns to embed; :data:`E_CATEGORICAL` when None.
    """

    def __init__(
        self,
        feature_sizes: dict[str, int],
        products: dict[str, list[str]] | None = None,
        embedding_dim: int = 16,
        num_experts: int = 4,
        expert_hidden: list[int] | None = None,
        tower_hidden: list[int] | None = None,
        categorical: list[str] | None = None,
    ) -> None:
        super().__init__()
        self.products = {name: list(factors) for name, factors in (products or DEFAULT_PRODUCTS).items()}
        if not self.products or any(not factors for factors in self.products.values()):
            raise ValueError(f"ESMM needs products with at least one factor each, got {self.products}")
        for name, factors in self.products.items():
            if len(set(factors)) != len(factors):
                raise ValueError(f"product {name!r} repeats a factor: {factors}")
        self.tasks = list(self.products)
        self.factors = list(dict.fromkeys(f for factors in self.products.values() for f in factors))
        clash = [name for name in self.tasks if name in self.factors and self.products[name] != [name]]
        if clash:
            raise ValueError(f"products {clash} share a factor's name but are not that single factor")
        names = list(categorical) if categorical is not None else list(E_CATEGORICAL)
        self.backbone = MMoE(
            feature_sizes,
            tasks=self.factors,
            embedding_dim=embedding_dim,
            num_experts=num_experts,
            expert_hidden=expert_hidden,
            tower_hidden=tower_hidden,
            categorical=names,
            counts={},
        )

    @property
    def input_columns(self) -> tuple[str, ...]:
        """Every batch column the network reads."""
        own = ("trigger_category", "hist_same_category_views")
        return tuple(c for c in (*self.backbone.input_columns, "user_segment") if c not in own)

    def factor_logits(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Logit of every factor (conditional probability), of the batch columns' shape."""
        missing = [name for name in self.input_columns if name not in batch]
        if missing:
            raise KeyError(f"ESMM needs batch columns {list(self.input_columns)}; missing {missing}")
        inputs = dict(batch)
        inputs["trigger_category"] = batch["user_segment"]
        inputs["hist_same_category_views"] = torch.zeros_like(batch["user_segment"])
        return self.backbone(inputs)

    def log_probabilities(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Log-probability of every factor and every product (products as sums of factor log-sigmoids)."""
        factor = self.factor_logits(batch)
        out = {name: F.logsigmoid(z) for name, z in factor.items()}
        for name, factors in self.products.items():
            out[name] = product_log_prob([factor[f] for f in factors])
        return out

    def probabilities(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Probability of every factor and every product (the served predictions)."""
        return {name: torch.exp(log_p) for name, log_p in self.log_probabilities(batch).items()}

    def forward(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Score a batch.

        Args:
            batch: Feature columns, each of shape ``[B]`` (or any leading shape, e.g. ``[R, n]``).

        Returns:
            Product head -> exact logit of the product probability (:func:`product_logit`).
        """
        factor = self.factor_logits(batch)
        return {name: product_logit(product_log_prob([factor[f] for f in fs])) for name, fs in self.products.items()}
