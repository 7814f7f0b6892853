"""The auxiliary two-tower of RecFlow's DIN with the auxiliary ranking loss (its BPR term is scored by this tower).

* User side: context and user features (8), the self-attentive pooling of the behaviours (5: ``self_agg_mlp``
  ``5d -> hidden -> 1``, masked softmax over the real behaviours) and their mean (5), ``18d -> hidden -> out``,
  L2-normalised.
* Item side: the item's 8 features, ``8d -> hidden -> out``, L2-normalised.
* Logit: the cosine of the two vectors.

The tower owns no embedding table: it is given the CTR model's embeddings (shared), as in the reference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stcrank.models.dssm import masked_mean
from stcrank.models.mlp import mlp


class AuxiliaryTwoTower(nn.Module):
    """Cosine two-tower over already-embedded features.

    Args:
        embedding_dim: Width of each feature embedding.
        hidden: Hidden width of both towers and of the self-attentive pooling.
        out: Width of the user and item vectors.
    """

    def __init__(self, embedding_dim: int = 8, hidden: int = 80, out: int = 32) -> None:
        super().__init__()
        behaviour = 5 * embedding_dim
        self.self_agg = mlp(behaviour, [hidden], 1)
        self.user_tower = mlp((8 + 5 + 5) * embedding_dim, [hidden], out)
        self.item_tower = mlp(8 * embedding_dim, [hidden], out)

    def user_vector(self, request: Tensor, behaviours: Tensor, mask: Tensor) -> Tensor:
        """Normalised user vectors ``[B, out]``.

        Args:
            request: Flattened context and user embeddings ``[B, 8d]``.
            behaviours: Behaviour embeddings ``[B, L, 5d]``.
            mask: ``True`` on real behaviours ``[B, L]``.
        """
        logits = self.self_agg(behaviours).squeeze(-1).masked_fill(~mask, -1e9)
        weights = torch.softmax(logits, dim=-1) * mask  # zero for a user with no behaviour
        pooled = (weights.unsqueeze(-1) * behaviours).sum(-2)
        user = self.user_tower(torch.cat([request, pooled, masked_mean(behaviours, mask)], dim=-1))
        return F.normalize(user, dim=-1)

    def item_vector(self, items: Tensor) -> Tensor:
        """Normalised item vectors ``[..., out]`` of flattened item embeddings ``[..., 8d]``."""
        return F.normalize(self.item_tower(items), dim=-1)

    def forward(self, request: Tensor, behaviours: Tensor, mask: Tensor, items: Tensor) -> Tensor:
        """Cosine logits ``[B, C]`` of items ``[B, C, 8d]`` (see :meth:`user_vector` for the other inputs)."""
        user = self.user_vector(request, behaviours, mask)
        return (self.item_vector(items) @ user.unsqueeze(-1)).squeeze(-1)
