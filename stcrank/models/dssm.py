"""DSSM: the RecFlow coarse-ranking baseline, a two-tower model scored by an inner product."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from stcrank.checks import NETWORK, check_not_empty, check_positive
from stcrank.models.base import RankingNetwork
from stcrank.models.competing import CompetingAttention, request_behaviours
from stcrank.models.distinct import per_distinct_row
from stcrank.models.features import SEQUENCE_FEATURES, RecFlowEmbeddings
from stcrank.models.mlp import mlp
from stcrank.models.per_request import BLOCK_ELEMENTS, block_sizes, request_tensors, rows_of


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
    * Item tower: the item's 8 features through ``item_tower``, once per distinct item of a batch
      (:mod:`stcrank.models.distinct`).
    * Logit: the inner product of the two vectors. The user vector is computed once per request and scored
      against every candidate of the request, and against every exposure of it in a batch with
      ``request_slot`` (see :mod:`stcrank.models.per_request`).

    Args:
        feature_sizes: Embedding-table sizes by feature name (linked from the data module).
        embedding_dim: Width of each feature embedding.
        user_tower: Widths of the user tower; the last has no activation.
        item_tower: Widths of the item tower; the last has no activation.
        competing: Append the mean competing-item representation to the user tower's input.
        competing_hidden: Hidden width of the competing attention.
        competing_empty: What a behaviour without competing items contributes (``"zero"`` or ``"behaviour"``).
        block_elements: Size in floats of the item tower's largest activation per block of items: the tower
            runs over blocks of items small enough to stay in the CPU cache.
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
        block_elements: int = BLOCK_ELEMENTS,
    ) -> None:
        super().__init__()
        check_positive("DSSM", NETWORK, embedding_dim=embedding_dim, user_tower=user_tower, item_tower=item_tower)
        check_positive("DSSM", NETWORK, competing_hidden=competing_hidden, block_elements=block_elements)
        check_not_empty("DSSM", NETWORK, user_tower=user_tower, item_tower=item_tower)
        self.block_elements = block_elements
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
        """The user-tower output of each request of a batch, ``[R, w]``."""
        return self.user_vectors(*request_tensors(batch))

    def user_vectors(
        self,
        context: Tensor,
        user: Tensor,
        seq: Tensor,
        seq_mask: Tensor,
        competing: Tensor | None = None,
        competing_mask: Tensor | None = None,
        dense: bool = False,
    ) -> Tensor:
        """The user-tower output of each request, ``[R, w]``.

        Args:
            context: Request time features ``[R, 3]``.
            user: User features ``[R, 5]``.
            seq: Behaviour features ``[R, L, 5]``.
            seq_mask: ``True`` on real behaviours ``[R, L]``.
            competing: Competing items of each behaviour ``[R, L, K, 5]`` (``competing=True`` only).
            competing_mask: ``True`` on real competing items ``[R, L, K]`` (``competing=True`` only).
            dense: Refine the behaviours on the whole competing grid (shapes that do not depend on the data, for
                tracing; see :func:`~stcrank.models.competing.refine_behaviours`).
        """
        behaviours, refined = request_behaviours(
            "DSSM", self.embeddings, self.competing, seq, competing, competing_mask, dense
        )  # [R, L, 5d] each
        parts = [self.embeddings.context(context).flatten(-2), self.embeddings.user(user).flatten(-2)]
        parts.append(masked_mean(behaviours, seq_mask))
        if refined is not None:
            parts.append(masked_mean(refined, seq_mask))
        return self.user_tower(torch.cat(parts, dim=-1))

    def item_vector(self, items: Tensor, dense: bool = False) -> Tensor:
        """The item-tower output of items ``[..., 8]``, ``[..., w]``, computed once per distinct item.

        Args:
            items: Item features ``[..., 8]``.
            dense: Run the tower on every item in one block, repeats included (shapes that do not depend on the
                data, for tracing).
        """
        return self._item_tower(items, dense) if dense else per_distinct_row(self._item_tower, items)

    def _item_tower(self, items: Tensor, dense: bool = False) -> Tensor:
        # items [N, 8] -> [N, w], over blocks of rows that keep the activations in the CPU cache (dense: [..., 8]
        # in one block)
        flat = self.embeddings.item(items).flatten(-2)
        if dense:
            return self.item_tower(flat)
        widest = max(layer.out_features for layer in self.item_tower if isinstance(layer, nn.Linear))
        sizes = block_sizes(len(flat), widest, self.block_elements, flat.device)
        blocks = [self.item_tower(block) for block in flat.split(sizes)]
        return blocks[0] if len(blocks) == 1 else torch.cat(blocks)

    def score_items(
        self, users: Tensor, items: Tensor, request_slot: Tensor | None = None, dense: bool = False
    ) -> Tensor:
        """Logits ``[B, C]`` of items ``[B, C, 8]`` against user vectors ``[R, w]``.

        Args:
            users: :meth:`user_vectors` of the batch's requests.
            items: Item features of each row, ``[B, C, 8]``.
            request_slot: Request of each row ``[B]``; None when row ``b`` is request ``b``.
            dense: Run the item tower on every item (see :meth:`item_vector`).
        """
        # A product and a sum rather than a batched matrix-vector product: one pass, no per-row kernel.
        return (self.item_vector(items, dense) * rows_of(users, request_slot).unsqueeze(-2)).sum(-1)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        """Score the item of each row; logits ``[B]``."""
        items = batch["item"].unsqueeze(1)
        return self.score_items(self.user_vector(batch), items, batch.get("request_slot")).squeeze(1)

    def score_candidates(self, batch: dict[str, Tensor]) -> Tensor:
        """Score every candidate of each row against its request's user vector; logits ``[B, C]``."""
        return self.score_items(self.user_vector(batch), batch["candidates"], batch.get("request_slot"))
