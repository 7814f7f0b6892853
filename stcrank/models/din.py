"""DIN: the RecFlow ranking baseline (Deep Interest Network with target attention over the behaviour sequence).

The network's work splits into a per-request part and a per-candidate part, computed apart
(:class:`RequestEncoding`):

* once per request: the context, user and behaviour embeddings (refined by their competing items in the UBM
  variant), the request's share of the prediction tower's first layer and, when a row holds several candidates
  or no gradient is needed, the behaviours' share of the attention MLP's first layer (training on one item per
  row projects each row's real behaviours instead: cheaper than gathering the projections and their gradients);
* once per distinct item of the batch (:mod:`stcrank.models.distinct`): the item embeddings, the target's share
  of the attention MLP's first layer and the item's share of the tower's first layer;
* per (candidate, behaviour) pair: only the attention MLP's ReLU and second layer, over blocks of rows sized for
  the CPU cache, skipping the positions that are padding in every row of a block.

A batch holds one row per request (stage candidates) or one row per exposure with ``request_slot`` naming the
row's request (see :mod:`stcrank.models.per_request`); both are scored by the same code.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from stcrank.checks import NETWORK, check_not_empty, check_positive
from stcrank.models.aux_tower import AuxiliaryTwoTower
from stcrank.models.base import RankingNetwork
from stcrank.models.competing import CompetingAttention, request_behaviours
from stcrank.models.distinct import per_distinct_row
from stcrank.models.features import SEQUENCE_FEATURES, RecFlowEmbeddings
from stcrank.models.mlp import mlp
from stcrank.models.per_request import (
    BLOCK_ELEMENTS,
    block_sizes,
    length_sorted_blocks,
    request_tensors,
    rows_of,
    without_padded_positions,
)


class TargetAttention(nn.Module):
    """DIN target attention: ``MLP([behaviour ; target]) -> 1`` per behaviour, masked softmax, weighted sum.

    The first layer on the concatenation is the sum of a behaviour map and a target map, so it splits into the
    behaviours' share (:meth:`project_keys`, once per request) and the target's share with the bias
    (:meth:`project_targets`, once per candidate). Per (target, behaviour) pair only the ReLU and the second
    layer remain; without gradients they are computed as ``v . relu(k + t) = v . max(k, -t) + v . t``, one
    broadcast maximum and one matrix product per pair (``v . t`` and the bias are constant over a target's
    behaviours, so the softmax drops them).

    Args:
        width: Width of one behaviour (and target) representation.
        hidden: Hidden width of the attention MLP.
    """

    def __init__(self, width: int, hidden: int = 80) -> None:
        super().__init__()
        self.width = width
        self.first = nn.Linear(2 * width, hidden)
        self.second = nn.Linear(hidden, 1)

    def project_keys(self, keys: Tensor) -> Tensor:
        """The behaviours' share of the first layer, ``[..., L, w] -> [..., L, hidden]`` (no bias)."""
        return F.linear(keys, self.first.weight[:, : self.width])

    def project_targets(self, targets: Tensor) -> Tensor:
        """The targets' share of the first layer with its bias, ``[..., C, w] -> [..., C, hidden]``."""
        return F.linear(targets, self.first.weight[:, self.width :], self.first.bias)

    def attend(self, keys: Tensor, key_hidden: Tensor, mask: Tensor, target_hidden: Tensor) -> Tensor:
        """Interest of each target from projected behaviours and targets.

        Args:
            keys: Behaviour representations ``[N, L, w]`` (the values of the weighted sum).
            key_hidden: :meth:`project_keys` of the behaviours, ``[N, L, hidden]``.
            mask: ``True`` on real behaviours ``[N, L]``.
            target_hidden: :meth:`project_targets` of the targets, ``[N, C, hidden]``.

        Returns:
            Interest per target ``[N, C, w]``; zero for a user with no behaviour.
        """
        v = self.second.weight[0]
        if torch.is_grad_enabled():
            # Training: ReLU's backward is one pass over the pairs (the maximum's is several).
            logits = torch.relu_(key_hidden.unsqueeze(1) + target_hidden.unsqueeze(2)) @ v + self.second.bias
        else:
            # relu(k + t) = max(k, -t) + t: one pass over [N, C, L, hidden] less than adding, then the ReLU. The
            # rest of the logit, v . t + bias, is the same for every behaviour of a target: the softmax ignores it.
            logits = torch.maximum(key_hidden.unsqueeze(1), target_hidden.neg().unsqueeze(2)) @ v  # [N, C, L]
        # A large negative rather than -inf: an empty history gives uniform weights over zero embeddings.
        logits = logits.masked_fill(~mask.unsqueeze(1), -1e9)
        return torch.softmax(logits, dim=-1) @ keys

    def attend_one(self, keys: Tensor, mask: Tensor, target_hidden: Tensor) -> Tensor:
        """Interest of one target per row, the behaviours projected per row (cheapest with gradients).

        With one target per row the pairs are no more than the behaviours, so the first layer is computed on the
        row's behaviours themselves, and on a CPU on its real behaviours only (padding gets a softmax weight of
        exactly zero, so the result is the same).

        Args:
            keys: Behaviour representations of each row ``[N, L, w]``.
            mask: ``True`` on real behaviours ``[N, L]``.
            target_hidden: :meth:`project_targets` of each row's target, ``[N, 1, hidden]``.

        Returns:
            Interest ``[N, 1, w]``.
        """
        rows, length, width = keys.shape
        v = self.second.weight[0]
        if torch.compiler.is_compiling() or keys.device.type != "cpu":
            hidden = self.project_keys(keys)
            hidden += target_hidden  # in place: the linear map's backward does not need its output
            logits = torch.relu_(hidden) @ v + self.second.bias  # [N, L]
            logits = logits.masked_fill(~mask, -1e9)
        else:
            row, position = mask.nonzero(as_tuple=True)  # the real behaviours, row-major like masked_scatter
            hidden = self.project_keys(keys.reshape(rows * length, width).index_select(0, row * length + position))
            hidden += target_hidden.view(rows, -1).index_select(0, row)
            real = torch.relu_(hidden) @ v + self.second.bias  # [M]
            logits = torch.full(mask.shape, -1e9, dtype=real.dtype, device=real.device).masked_scatter(mask, real)
        return (torch.softmax(logits, dim=-1).unsqueeze(1) @ keys).view(rows, 1, width)

    def forward(self, keys: Tensor, mask: Tensor, targets: Tensor) -> Tensor:
        """Attend from each target to the behaviours.

        Args:
            keys: Behaviour representations ``[B, L, w]``.
            mask: ``True`` on real behaviours ``[B, L]``.
            targets: Target representations ``[B, C, w]``.

        Returns:
            Interest per target ``[B, C, w]``; zero for a user with no behaviour.
        """
        return self.attend(keys, self.project_keys(keys), mask, self.project_targets(targets))


def per_row_keys(items: Tensor) -> bool:
    """Whether to project the behaviours per row rather than per request: when training on one item per row.

    Projecting per request saves work only where requests repeat, while its backward pass gathers and scatters
    ``[rows, L, attention_hidden]`` gradients; with one item per row, projecting each row's behaviours in place is
    the cheaper of the two (and without gradients the per-request projection always is).
    """
    return items.shape[1] == 1 and torch.is_grad_enabled()


class RequestEncoding(NamedTuple):
    """The per-request part of DIN's computation, one row per request."""

    tower: Tensor
    """The request's share of the prediction tower's first layer, bias included, ``[R, tower[0]]``."""
    behaviours: Tensor
    """Behaviour representations (keys and values of the attention), ``[R, L, 5d]``."""
    key_hidden: Tensor | None
    """The behaviours' share of the attention MLP's first layer, ``[R, L, attention_hidden]``; None when it is
    computed per row instead (training on one item per row, see :meth:`DIN.encode_requests`)."""
    mask: Tensor
    """``True`` on real behaviours, ``[R, L]``."""


class DIN(RankingNetwork):
    """RecFlow's DIN ranking model (spec: ranking baseline).

    Tower input: request context (3 features), user (5), interest (5 = attention over the 50 behaviours with
    the target's first five features as query) and the target item (8), each feature ``embedding_dim`` wide.
    The request's share of the tower's first layer and the behaviours' share of the attention MLP's first layer
    are computed once per request (see the module docstring).

    Variants:

    * ``competing=True`` (RecFlow's DIN_UBM): each behaviour is first refined by attention over its competing
      items (:class:`~stcrank.models.competing.CompetingAttention`), and the refined behaviours replace the
      behaviour embeddings as keys and values of the target attention. Batches must carry ``competing``.
    * ``auxiliary_tower=True`` (RecFlow's DIN_AuxRanking): an
      :class:`~stcrank.models.aux_tower.AuxiliaryTwoTower` sharing the embeddings scores the auxiliary ranking
      term (:meth:`auxiliary_scores`); the DIN logit alone is used for BCE and for evaluation.

    Args:
        feature_sizes: Embedding-table sizes by feature name (linked from the data module).
        embedding_dim: Width of each feature embedding.
        attention_hidden: Hidden width of the target-attention MLP.
        tower: Hidden widths of the prediction tower (ReLU), followed by a linear layer to one logit.
        block_elements: Size in floats of the largest intermediate tensor of one block of rows (the pairwise
            ``rows x candidates x behaviours x attention_hidden`` term): rows are scored block by block so that
            it stays in the CPU cache and memory stays bounded.
        competing: Refine the behaviours with their competing items (see above).
        competing_hidden: Hidden width of the competing attention.
        competing_empty: What a behaviour without competing items becomes (``"zero"`` or ``"behaviour"``).
        auxiliary_tower: Add the auxiliary two-tower (see above).
        auxiliary_hidden: Hidden width of the auxiliary two-tower.
        auxiliary_out: Width of the auxiliary two-tower's vectors.
    """

    def __init__(
        self,
        feature_sizes: dict[str, int],
        embedding_dim: int = 8,
        attention_hidden: int = 80,
        tower: list[int] | None = None,
        block_elements: int = BLOCK_ELEMENTS,
        competing: bool = False,
        competing_hidden: int = 80,
        competing_empty: Literal["zero", "behaviour"] = "zero",
        auxiliary_tower: bool = False,
        auxiliary_hidden: int = 80,
        auxiliary_out: int = 32,
    ) -> None:
        super().__init__()
        sizes = {"embedding_dim": embedding_dim, "attention_hidden": attention_hidden, "tower": tower}
        check_positive("DIN", NETWORK, **sizes, block_elements=block_elements, competing_hidden=competing_hidden)
        check_positive("DIN", NETWORK, auxiliary_hidden=auxiliary_hidden, auxiliary_out=auxiliary_out)
        check_not_empty("DIN", NETWORK, tower=tower)
        self.embeddings = RecFlowEmbeddings(feature_sizes, embedding_dim)
        behaviour_width = len(SEQUENCE_FEATURES) * embedding_dim
        self.attention = TargetAttention(behaviour_width, attention_hidden)
        # Tower input: [request (3 + 5 features) ; interest (5) ; item (8)].
        self.input_widths = [(3 + 5) * embedding_dim, behaviour_width, 8 * embedding_dim]
        self.tower = mlp(sum(self.input_widths), tower or [128, 128, 32], 1)
        self.block_elements = block_elements
        self.competing = CompetingAttention(behaviour_width, competing_hidden, competing_empty) if competing else None
        self.auxiliary = AuxiliaryTwoTower(embedding_dim, auxiliary_hidden, auxiliary_out) if auxiliary_tower else None

    # -- batch dictionaries ----------------------------------------------------------------------------------------

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        """Score the exposure of each row; returns logits ``[B]``."""
        return self._score_batch(batch, batch["item"].unsqueeze(1)).squeeze(1)

    def score_candidates(self, batch: dict[str, Tensor]) -> Tensor:
        """Score every candidate of each row (stage candidates of a request); returns logits ``[B, C]``."""
        return self._score_batch(batch, batch["candidates"])

    def auxiliary_scores(self, batch: dict[str, Tensor]) -> Tensor:
        """Auxiliary two-tower logits of the exposure and its request's stage items, ``[B, 1 + K]``.

        Without ``auxiliary_tower`` the DIN itself scores them.

        Args:
            batch: An auxiliary-exposures batch (``item`` and ``aux_items``).
        """
        items = torch.cat([batch["item"].unsqueeze(1), batch["aux_items"]], dim=1)
        if self.auxiliary is None:
            return self._score_batch(batch, items)
        request = self.request_embedding(batch["context"], batch["user"])
        behaviours = self.embeddings.behaviour(batch["seq"]).flatten(-2)
        users = self.auxiliary.user_vector(request, behaviours, batch["seq_mask"])
        item_vectors = self.auxiliary.item_vector(self.embeddings.item(items).flatten(-2))
        return (item_vectors @ rows_of(users, batch.get("request_slot")).unsqueeze(-1)).squeeze(-1)

    def _score_batch(self, batch: dict[str, Tensor], items: Tensor) -> Tensor:
        encoding = self.encode_requests(*request_tensors(batch), per_row_keys(items))
        return self.score_items(encoding, items, batch.get("request_slot"))

    # -- tensors ---------------------------------------------------------------------------------------------------

    def request_embedding(self, context: Tensor, user: Tensor) -> Tensor:
        """Flattened context and user embeddings, ``[R, 8d]``."""
        return torch.cat([self.embeddings.context(context), self.embeddings.user(user)], -2).flatten(-2)

    def encode_requests(
        self,
        context: Tensor,
        user: Tensor,
        seq: Tensor,
        seq_mask: Tensor,
        competing: Tensor | None = None,
        competing_mask: Tensor | None = None,
        keys_per_row: bool = False,
        dense: bool = False,
    ) -> RequestEncoding:
        """The per-request part of the computation.

        Args:
            context: Request time features ``[R, 3]``.
            user: User features ``[R, 5]``.
            seq: Behaviour features ``[R, L, 5]``.
            seq_mask: ``True`` on real behaviours ``[R, L]``.
            competing: Competing items of each behaviour ``[R, L, K, 5]`` (``competing=True`` only).
            competing_mask: ``True`` on real competing items ``[R, L, K]`` (``competing=True`` only).
            keys_per_row: Leave the behaviours' share of the attention's first layer to be computed per row
                (``key_hidden=None``): cheaper when training on one item per row (see :func:`per_row_keys`).
            dense: Refine the behaviours on the whole competing grid (shapes that do not depend on the data, for
                tracing; see :func:`~stcrank.models.competing.refine_behaviours`).
        """
        behaviours, refined = request_behaviours(
            "DIN", self.embeddings, self.competing, seq, competing, competing_mask, dense
        )  # [R, L, 5d] each
        if refined is not None:  # the refined behaviours replace the embeddings as keys and values
            behaviours = refined
        first = self.tower[0]
        tower = F.linear(self.request_embedding(context, user), first.weight[:, : self.input_widths[0]], first.bias)
        key_hidden = None if keys_per_row else self.attention.project_keys(behaviours)
        return RequestEncoding(tower, behaviours, key_hidden, seq_mask)

    def _item_side(self, items: Tensor) -> Tensor:
        # items [..., 8] -> [..., attention_hidden + tower[0]]: the target's share of the attention MLP's first
        # layer and the item's share of the tower's first layer.
        item = self.embeddings.item(items)  # [..., 8, d]
        target_hidden = self.attention.project_targets(item[..., : len(SEQUENCE_FEATURES), :].flatten(-2))
        item_share = F.linear(item.flatten(-2), self.tower[0].weight.split(self.input_widths, dim=1)[2])
        return torch.cat([target_hidden, item_share], dim=-1)

    def score_items(
        self, encoding: RequestEncoding, items: Tensor, request_slot: Tensor | None = None, dense: bool = False
    ) -> Tensor:
        """Logits ``[B, C]`` of items ``[B, C, 8]``, row ``b`` belonging to request ``request_slot[b]``.

        Args:
            encoding: :meth:`encode_requests` of the batch's requests.
            items: Item features of each row, ``[B, C, 8]``.
            request_slot: Request of each row ``[B]``; None when row ``b`` is request ``b``.
            dense: Score every item (repeats included) and every pair in one block, without skipping padding:
                the same result, with shapes that do not depend on the data (for tracing).
        """
        item_side = self._item_side(items) if dense else per_distinct_row(self._item_side, items)
        target_hidden, item_share = item_side.split(
            [self.attention.first.out_features, self.tower[0].out_features], dim=-1
        )
        rows, candidates = items.shape[:2]
        interest = self._interest(encoding, target_hidden, request_slot, dense)  # [B, C, 5d]
        interest_weight = self.tower[0].weight.split(self.input_widths, dim=1)[1]
        hidden = item_share + F.linear(interest, interest_weight) + rows_of(encoding.tower, request_slot).unsqueeze(1)
        return self._tower_after_first_layer(hidden.view(rows * candidates, -1), dense).view(rows, candidates)

    def _interest(
        self, encoding: RequestEncoding, target_hidden: Tensor, request_slot: Tensor | None, dense: bool = False
    ) -> Tensor:
        # The pairwise term block by block, so that [B, C, L, attention_hidden] never exists at once. On a CPU, with
        # several candidates per row, rows go in order of history length so that a block's positions that are
        # padding in all of its rows are skipped (with one candidate per row the pairs are no larger than the keys:
        # skipping would cost about what it saves). Dense: one block of every row and position.
        rows, candidates, hidden = target_hidden.shape
        mask = rows_of(encoding.mask, request_slot)
        if encoding.key_hidden is None:
            if candidates != 1:
                raise ValueError("an encoding without key_hidden scores one item per row")
            return self.attention.attend_one(rows_of(encoding.behaviours, request_slot), mask, target_hidden)
        if dense:
            values, keys = (rows_of(tensor, request_slot) for tensor in encoding[1:3])
            return self.attention.attend(values, keys, mask, target_hidden)
        sorted_blocks = length_sorted_blocks(mask, candidates * hidden, self.block_elements) if candidates > 1 else None
        if sorted_blocks is None:
            order = None
            pairs = candidates * mask.shape[1] * hidden
            sizes = block_sizes(rows, pairs, self.block_elements, target_hidden.device)
            per_row = [rows_of(tensor, request_slot) for tensor in encoding[1:3]] + [mask, target_hidden]
        else:
            order, sizes = sorted_blocks
            index = order if request_slot is None else request_slot.index_select(0, order)
            per_row = [tensor.index_select(0, index) for tensor in encoding[1:]]
            per_row.append(target_hidden.index_select(0, order))
        interest = []
        for values, keys, block_mask, targets in zip(*(tensor.split(sizes) for tensor in per_row), strict=True):
            block_mask, values, keys = without_padded_positions(block_mask, values, keys)
            interest.append(self.attention.attend(values, keys, block_mask, targets))
        interest = interest[0] if len(interest) == 1 else torch.cat(interest)
        if order is not None:
            interest = interest.index_select(0, torch.argsort(order))
        return interest

    def _tower_after_first_layer(self, hidden: Tensor, dense: bool = False) -> Tensor:
        # [N, tower[0]] pre-activations -> [N] logits, over blocks of rows that keep the activations in the cache
        # (dense: one block)
        layers = list(self.tower)[2:]
        blocks = [hidden]
        if not dense:
            widest = max(layer.out_features for layer in layers if isinstance(layer, nn.Linear))
            blocks = hidden.split(block_sizes(len(hidden), widest, self.block_elements, hidden.device))
        out = []
        for block in blocks:
            block = torch.relu(block)
            for layer in layers:
                block = layer(block)
            out.append(block.squeeze(-1))
        return out[0] if len(out) == 1 else torch.cat(out)
