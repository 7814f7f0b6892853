"""Competing-item attention: refine each past behaviour with the items it competed against (RecFlow UBM).

For behaviour ``b`` with competing items ``c_1..c_K`` (the ``rank_pos`` items of the request it came from),
``w_k = softmax_k(carm_mlp([c_k ; b]))`` over the real items and the refined behaviour is ``sum_k w_k c_k``
(``carm_mlp``: ``Linear(2w, hidden) -> ReLU -> Linear(hidden, 1)``).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from stcrank.models.features import RecFlowEmbeddings


class CompetingAttention(nn.Module):
    """Attention of each behaviour over its competing items.

    A behaviour with no competing item gets a zero vector (``empty="zero"``, what the reference's uniform weights
    over zero padding amount to) or its own representation (``empty="behaviour"``). Padded behaviours give zero.

    Args:
        width: Width of one item (and behaviour) representation.
        hidden: Hidden width of ``carm_mlp``.
        empty: What a behaviour without competing items becomes.
    """

    def __init__(self, width: int, hidden: int = 80, empty: Literal["zero", "behaviour"] = "zero") -> None:
        super().__init__()
        if empty not in ("zero", "behaviour"):
            raise ValueError(f"CompetingAttention: empty must be 'zero' or 'behaviour', got {empty!r}")
        self.width = width
        self.empty = empty
        self.first = nn.Linear(2 * width, hidden)
        self.second = nn.Linear(hidden, 1)

    def forward(self, competing: Tensor, mask: Tensor, behaviours: Tensor) -> Tensor:
        """Refine the behaviours.

        Args:
            competing: Competing item representations ``[B, L, K, w]``.
            mask: ``True`` on real competing items ``[B, L, K]``.
            behaviours: Behaviour representations ``[B, L, w]``.

        Returns:
            ``[B, L, w]``.
        """
        # The first layer on [c ; b] is the sum of two linear maps; b's part is computed once per behaviour.
        weight_c, weight_b = self.first.weight[:, : self.width], self.first.weight[:, self.width :]
        hidden = competing @ weight_c.T + (behaviours @ weight_b.T + self.first.bias).unsqueeze(-2)
        logits = self.second(torch.relu(hidden)).squeeze(-1).masked_fill(~mask, -1e9)  # [B, L, K]
        weights = torch.softmax(logits, dim=-1) * mask  # exactly zero on padding, all-zero without items
        refined = (weights.unsqueeze(-1) * competing).sum(-2)
        if self.empty == "behaviour":
            refined = torch.where(mask.any(-1, keepdim=True), refined, behaviours)
        return refined


def competing_behaviours(embeddings: RecFlowEmbeddings, batch: dict[str, Tensor]) -> Tensor:
    """Embed a batch's competing items to ``[B, L, K, 5d]`` (the behaviour feature tables)."""
    return embeddings.behaviour(batch["competing"]).flatten(-2)
