"""Competing-item attention: refine each past behaviour with the items it competed against (RecFlow UBM).

For behaviour ``b`` with competing items ``c_1..c_K`` (the ``rank_pos`` items of the request it came from),
``w_k = softmax_k(carm_mlp([c_k ; b]))`` over the real items and the refined behaviour is ``sum_k w_k c_k``
(``carm_mlp``: ``Linear(2w, hidden) -> ReLU -> Linear(hidden, 1)``).

Most of a batch's ``[B, L, K]`` grid is padding (short histories, behaviours whose request has fewer than ``K``
items or none). :func:`refined_behaviours` therefore runs the attention on the behaviours that have competing
items only, and runs the embedding lookups and the MLP on their real items only (padding gets a softmax weight
of exactly zero on the full grid), so the result is the one of the full grid while the work and the gradients
shrink with the padding.
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
            competing: Competing item representations ``[..., K, w]`` (``[B, L, K, w]`` for a batch).
            mask: ``True`` on real competing items ``[..., K]``.
            behaviours: Behaviour representations ``[..., w]``.

        Returns:
            ``[..., w]``.
        """
        # The first layer on [c ; b] is the sum of two linear maps; b's part is computed once per behaviour.
        weight_c, weight_b = self.first.weight[:, : self.width], self.first.weight[:, self.width :]
        hidden = competing @ weight_c.T + nn.functional.linear(behaviours, weight_b, self.first.bias).unsqueeze(-2)
        logits = (torch.relu(hidden) @ self.second.weight.squeeze(0) + self.second.bias).masked_fill(~mask, -1e9)
        weights = torch.softmax(logits, dim=-1) * mask  # exactly zero on padding, all-zero without items
        refined = (weights.unsqueeze(-2) @ competing).squeeze(-2)  # [..., 1, K] @ [..., K, w]
        if self.empty == "behaviour":
            refined = torch.where(mask.any(-1, keepdim=True), refined, behaviours)
        return refined

    def forward_pairs(self, competing: Tensor, row: Tensor, mask: Tensor, behaviours: Tensor) -> Tensor:
        """Refine behaviours that each have at least one competing item, given their real items only.

        The same result as :meth:`forward` on the dense layout, with the MLP run on the real items alone.

        Args:
            competing: Representations of the real competing items ``[M, w]``, in the row-major order of
                ``mask.nonzero()``.
            row: The behaviour of each real item ``[M]`` (``mask.nonzero()[:, 0]``).
            mask: ``True`` on real competing items ``[N, K]``; every row has one at least.
            behaviours: Behaviour representations ``[N, w]``.

        Returns:
            ``[N, w]``.
        """
        weight_c, weight_b = self.first.weight[:, : self.width], self.first.weight[:, self.width :]
        hidden = competing @ weight_c.T + nn.functional.linear(behaviours, weight_b, self.first.bias)[row]
        logits = torch.relu(hidden) @ self.second.weight.squeeze(0) + self.second.bias  # [M]
        # The softmax runs on the dense [N, K] layout, where padding weighs exactly zero.
        dense = torch.full(mask.shape, -1e9, dtype=logits.dtype, device=logits.device).masked_scatter(mask, logits)
        weights = torch.softmax(dense, dim=-1)[mask]  # [M]
        return torch.zeros_like(behaviours).index_add(0, row, weights.unsqueeze(-1) * competing)


def competing_behaviours(embeddings: RecFlowEmbeddings, batch: dict[str, Tensor]) -> Tensor:
    """Embed a batch's competing items to ``[B, L, K, 5d]`` (the behaviour feature tables)."""
    return embeddings.behaviour(batch["competing"]).flatten(-2)


def refined_behaviours(
    attention: CompetingAttention, embeddings: RecFlowEmbeddings, batch: dict[str, Tensor], behaviours: Tensor
) -> Tensor:
    """The behaviours of a batch refined by their competing items, ``[B, L, w]``.

    Equal to ``attention(competing_behaviours(embeddings, batch), batch["competing_mask"], behaviours)``, but
    computed on the real competing items of the behaviours that have some (see :func:`refine_behaviours`).

    Args:
        attention: The competing attention.
        embeddings: The tables the competing items are embedded with (the behaviour features).
        batch: A batch with ``competing [B, L, K, 5]`` and ``competing_mask [B, L, K]``.
        behaviours: Behaviour representations ``[B, L, w]``.
    """
    if "competing" not in batch or "competing_mask" not in batch:
        raise KeyError("the competing-item variant needs batches with competing items (set --data.competing_stage)")
    return refine_behaviours(attention, embeddings, batch["competing"], batch["competing_mask"], behaviours)


def refine_behaviours(
    attention: CompetingAttention,
    embeddings: RecFlowEmbeddings,
    competing: Tensor,
    competing_mask: Tensor,
    behaviours: Tensor,
    dense: bool = False,
) -> Tensor:
    """Behaviours refined by their competing items, ``[R, L, w]`` (one row per request).

    Computed on the real competing items of the behaviours that have some (see
    :meth:`CompetingAttention.forward_pairs`); the others get zero or their own representation, as in
    :class:`CompetingAttention`.

    Args:
        attention: The competing attention.
        embeddings: The tables the competing items are embedded with (the behaviour features).
        competing: Competing item ids ``[R, L, K, 5]``.
        competing_mask: ``True`` on real competing items ``[R, L, K]``.
        behaviours: Behaviour representations ``[R, L, w]``.
        dense: Run the attention on the whole ``[R, L, K]`` grid instead, padding included: the same result, with
            shapes that do not depend on the data (a traced graph cannot hold the selection of the real items).
    """
    if dense:
        return attention(embeddings.behaviour(competing).flatten(-2), competing_mask, behaviours)
    mask = competing_mask.flatten(0, 1)  # [R * L, K]
    flat = behaviours.flatten(0, 1)
    out = flat if attention.empty == "behaviour" else torch.zeros_like(flat)
    rows = mask.any(-1).nonzero().squeeze(-1)
    if len(rows) == 0:
        return out.view_as(behaviours)
    mask = mask[rows]  # [N, K]
    row, column = mask.nonzero(as_tuple=True)  # the real items, [M] each
    ids = competing.flatten(0, 2).index_select(0, rows[row] * mask.shape[1] + column)  # [M, 5]
    refined = attention.forward_pairs(embeddings.behaviour(ids).flatten(-2), row, mask, flat[rows])
    return out.index_copy(0, rows, refined).view_as(behaviours)


def request_behaviours(
    network: str,
    embeddings: RecFlowEmbeddings,
    attention: CompetingAttention | None,
    seq: Tensor,
    competing: Tensor | None,
    competing_mask: Tensor | None,
    dense: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """The behaviour representations of each request, ``[R, L, w]``, and the same refined by their competing items.

    Args:
        network: Name of the calling network (for the error message).
        embeddings: The behaviour feature tables.
        attention: The competing attention; None without the competing-item variant.
        seq: Behaviour features ``[R, L, 5]``.
        competing: Competing items of each behaviour ``[R, L, K, 5]`` (with ``attention`` only).
        competing_mask: ``True`` on real competing items ``[R, L, K]`` (with ``attention`` only).
        dense: Refine on the whole competing grid (see :func:`refine_behaviours`).

    Returns:
        ``(behaviours, refined)``; ``refined`` is None without ``attention``.

    Raises:
        KeyError: ``attention`` is given without the competing items.
    """
    behaviours = embeddings.behaviour(seq).flatten(-2)
    if attention is None:
        return behaviours, None
    if competing is None or competing_mask is None:
        raise KeyError(f"{network}(competing=True) needs batches with competing items (set --data.competing_stage)")
    return behaviours, refine_behaviours(attention, embeddings, competing, competing_mask, behaviours, dense)
