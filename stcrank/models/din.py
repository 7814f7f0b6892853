"""DIN: the RecFlow ranking baseline (Deep Interest Network with target attention over the behaviour sequence)."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from stcrank.checks import NETWORK, check_not_empty, check_positive
from stcrank.models.aux_tower import AuxiliaryTwoTower
from stcrank.models.base import RankingNetwork
from stcrank.models.competing import CompetingAttention, refined_behaviours
from stcrank.models.features import SEQUENCE_FEATURES, RecFlowEmbeddings
from stcrank.models.mlp import mlp


class TargetAttention(nn.Module):
    """DIN target attention: ``MLP([behaviour ; target]) -> 1`` per behaviour, masked softmax, weighted sum.

    The first layer acts on the concatenation, which equals the sum of two linear maps; computing them apart
    broadcasts ``[B, 1, L, h] + [B, C, 1, h]`` instead of materialising the ``[B, C, L, 2w]`` concatenation.

    Args:
        width: Width of one behaviour (and target) representation.
        hidden: Hidden width of the attention MLP.
    """

    def __init__(self, width: int, hidden: int = 80) -> None:
        super().__init__()
        self.width = width
        self.first = nn.Linear(2 * width, hidden)
        self.second = nn.Linear(hidden, 1)

    def forward(self, keys: Tensor, mask: Tensor, targets: Tensor) -> Tensor:
        """Attend from each target to the behaviours.

        Args:
            keys: Behaviour representations ``[B, L, w]``.
            mask: ``True`` on real behaviours ``[B, L]``.
            targets: Target representations ``[B, C, w]``.

        Returns:
            Interest per target ``[B, C, w]``; zero for a user with no behaviour.
        """
        weight_keys, weight_targets = self.first.weight[:, : self.width], self.first.weight[:, self.width :]
        hidden = keys @ weight_keys.T  # [B, L, h]
        hidden = hidden.unsqueeze(1) + (targets @ weight_targets.T + self.first.bias).unsqueeze(2)
        logits = self.second(torch.relu(hidden)).squeeze(-1)  # [B, C, L]
        # A large negative rather than -inf: an empty history gives uniform weights over zero embeddings.
        logits = logits.masked_fill(~mask.unsqueeze(1), -1e9)
        return torch.softmax(logits, dim=-1) @ keys


class DIN(RankingNetwork):
    """RecFlow's DIN ranking model (spec: ranking baseline).

    Tower input: request context (3 features), user (5), interest (5 = attention over the 50 behaviours with
    the target's first five features as query) and the target item (8), each feature ``embedding_dim`` wide.

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
        candidate_chunk: Candidates scored at once per request in :meth:`score_candidates`, bounding memory to
            ``B * candidate_chunk * L * attention_hidden`` floats.
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
        candidate_chunk: int = 64,
        competing: bool = False,
        competing_hidden: int = 80,
        competing_empty: Literal["zero", "behaviour"] = "zero",
        auxiliary_tower: bool = False,
        auxiliary_hidden: int = 80,
        auxiliary_out: int = 32,
    ) -> None:
        super().__init__()
        sizes = {"embedding_dim": embedding_dim, "attention_hidden": attention_hidden, "tower": tower}
        check_positive("DIN", NETWORK, **sizes, candidate_chunk=candidate_chunk, competing_hidden=competing_hidden)
        check_positive("DIN", NETWORK, auxiliary_hidden=auxiliary_hidden, auxiliary_out=auxiliary_out)
        check_not_empty("DIN", NETWORK, tower=tower)
        self.embeddings = RecFlowEmbeddings(feature_sizes, embedding_dim)
        behaviour_width = len(SEQUENCE_FEATURES) * embedding_dim
        self.attention = TargetAttention(behaviour_width, attention_hidden)
        self.tower = mlp((3 + 5 + 5 + 8) * embedding_dim, tower or [128, 128, 32], 1)
        self.candidate_chunk = candidate_chunk
        self.competing = CompetingAttention(behaviour_width, competing_hidden, competing_empty) if competing else None
        self.auxiliary = AuxiliaryTwoTower(embedding_dim, auxiliary_hidden, auxiliary_out) if auxiliary_tower else None

    def _embedded(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        request = torch.cat([self.embeddings.context(batch["context"]), self.embeddings.user(batch["user"])], -2)
        return request.flatten(-2), self.embeddings.behaviour(batch["seq"]).flatten(-2)  # [B, 8d], [B, L, 5d]

    def _request_side(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        request, behaviours = self._embedded(batch)
        if self.competing is not None:
            behaviours = refined_behaviours(self.competing, self.embeddings, batch, behaviours)
        return request, behaviours, batch["seq_mask"]

    def _score(self, request: Tensor, behaviours: Tensor, seq_mask: Tensor, items: Tensor) -> Tensor:
        # items [B, C, 8] -> logits [B, C]
        item = self.embeddings.item(items)  # [B, C, 8, d]
        interest = self.attention(behaviours, seq_mask, item[..., : len(SEQUENCE_FEATURES), :].flatten(-2))
        request = request.unsqueeze(1).expand(-1, items.shape[1], -1)
        return self.tower(torch.cat([request, interest, item.flatten(-2)], dim=-1)).squeeze(-1)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        """Score the exposure of each row; returns logits ``[B]``."""
        request, behaviours, seq_mask = self._request_side(batch)
        return self._score(request, behaviours, seq_mask, batch["item"].unsqueeze(1)).squeeze(1)

    def score_candidates(self, batch: dict[str, Tensor]) -> Tensor:
        """Score every stage candidate of each request; returns logits ``[B, C]``."""
        request, behaviours, seq_mask = self._request_side(batch)
        chunks = batch["candidates"].split(self.candidate_chunk, dim=1)
        return torch.cat([self._score(request, behaviours, seq_mask, chunk) for chunk in chunks], dim=1)

    def auxiliary_scores(self, batch: dict[str, Tensor]) -> Tensor:
        """Auxiliary two-tower logits of the exposure and its request's stage items, ``[B, 1 + K]``.

        Without ``auxiliary_tower`` the DIN itself scores them.

        Args:
            batch: An auxiliary-exposures batch (``item`` and ``aux_items``).
        """
        items = torch.cat([batch["item"].unsqueeze(1), batch["aux_items"]], dim=1)
        if self.auxiliary is None:
            return self.score_candidates({**batch, "candidates": items})
        request, behaviours = self._embedded(batch)
        return self.auxiliary(request, behaviours, batch["seq_mask"], self.embeddings.item(items).flatten(-2))
