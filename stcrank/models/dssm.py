"""DSSM: the RecFlow coarse-ranking baseline, a two-tower model scored by an inner product."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from stcrank.checks import NETWORK, check_not_empty, check_positive
from stcrank.models.base import RankingNetwork
from stcrank.models.competing import CompetingAttention, refined_behaviours
from stcrank.models.features import SEQUENCE_FEATURES, RecFlowEmbeddings
from stcrank.models.mlp import mlp


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values [..., L, w]`` over the positions where ``mask [..., L]`` is True (zero when none)."""
    weights = mask.to(values.dtype).unsqueeze(-1)
    return (values * weights).sum(-2) / weights.sum(-2).clamp(min=1.0)


class DSSM(RankingNetwork):
    """RecFlow's DSSM (spec: coarse-ranking baseline).

    * User tower: request context (3 features), user (5) and the mean of the real behaviours (5 features), each
      ``embedding_dim`` wide, through ``user_tower``. The mean runs over real behaviours only: padding never
      enters it (the reference code sums the padded positions, whose ``category_level_one`` embedding leaks).
      With ``competing=True`` the mean of the behaviours' competing-item representations (5 features) is
      appended (the coarse UBM variant).
    * Item tower: the item's 8 features through ``item_tower``.
    * Logit: the inner product of the two vectors; :meth:`score_candidates` computes the user vector once per
      request and scores every candidate against it.

    Args:
        feature_sizes: Embedding-table sizes by feature name (linked from the data module).
        embedding_dim: Width of each feature embedding.
        user_tower: Widths of the user tower; the last has no activation.
        item_tower: Widths of the item tower; the last has no activation.
        competing: Append the mean competing-item representation to the user tower's input.
        competing_hidden: Hidden width of the competing attention.
        competing_empty: What a behaviour without competing items contributes (``"zero"`` or ``"behaviour"``).
    """

    def __init__(
        self,
        feature_sizes: dict[str, int],
        embedding_dim: int = 8,
        user_tower: list[int] | None = None,
        item_tower: list[int] | None = None,
        competing: bool = False,
        competing_hidden: int = 80,
        competing_empty: Literal["zero", "behaviour"] = "zero",
    ) -> None:
        super().__init__()
        check_positive("DSSM", NETWORK, embedding_dim=embedding_dim, user_tower=user_tower, item_tower=item_tower)
        check_positive("DSSM", NETWORK, competing_hidden=competing_hidden)
        check_not_empty("DSSM", NETWORK, user_tower=user_tower, item_tower=item_tower)
        user_tower = list(user_tower or [128, 64, 32])
        item_tower = list(item_tower or [128, 64, 32])
        if user_tower[-1] != item_tower[-1]:
            raise ValueError(f"DSSM: the towers must end at the same width, got {user_tower} and {item_tower}")
        self.embeddings = RecFlowEmbeddings(feature_sizes, embedding_dim)
        behaviour_width = len(SEQUENCE_FEATURES) * embedding_dim
        self.competing = CompetingAttention(behaviour_width, competing_hidden, competing_empty) if competing else None
        user_in = (3 + 5 + 5 + (5 if competing else 0)) * embedding_dim
        self.user_tower = mlp(user_in, user_tower[:-1], user_tower[-1])
        self.item_tower = mlp(8 * embedding_dim, item_tower[:-1], item_tower[-1])

    def user_vector(self, batch: dict[str, Tensor]) -> Tensor:
        """The user-tower output of each request, ``[B, w]``."""
        context = self.embeddings.context(batch["context"]).flatten(-2)
        user = self.embeddings.user(batch["user"]).flatten(-2)
        behaviours = self.embeddings.behaviour(batch["seq"]).flatten(-2)  # [B, L, 5d]
        parts = [context, user, masked_mean(behaviours, batch["seq_mask"])]
        if self.competing is not None:
            refined = refined_behaviours(self.competing, self.embeddings, batch, behaviours)
            parts.append(masked_mean(refined, batch["seq_mask"]))
        return self.user_tower(torch.cat(parts, dim=-1))

    def item_vector(self, items: Tensor) -> Tensor:
        """The item-tower output of items ``[..., 8]``, ``[..., w]``."""
        return self.item_tower(self.embeddings.item(items).flatten(-2))

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        """Score the item of each row; logits ``[B]``."""
        return (self.user_vector(batch) * self.item_vector(batch["item"])).sum(-1)

    def score_candidates(self, batch: dict[str, Tensor]) -> Tensor:
        """Score every candidate against its request's user vector; logits ``[B, C]``."""
        user = self.user_vector(batch)
        return (self.item_vector(batch["candidates"]) @ user.unsqueeze(-1)).squeeze(-1)
