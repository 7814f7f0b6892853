"""The interface every point-wise ranking network implements."""

from __future__ import annotations

from abc import ABC, abstractmethod

from torch import Tensor, nn


class RankingNetwork(nn.Module, ABC):
    """A network that scores (request, item) pairs.

    It scores a batch of exposures (one item per row) for training and AUC/LogLoss, and every stage candidate
    of a batch of requests for Recall/NDCG. Both take the batch dictionaries of the data module.

    An exposures batch holds its request-level tensors (``context``, ``user``, ``seq``, ``seq_mask`` and, with
    competing items, ``competing``, ``competing_mask``) once per distinct request, ``[R, ...]``, with
    ``request_slot [B]`` naming each row's request (:mod:`stcrank.models.per_request`); a network that wants
    them per row calls :func:`stcrank.data.recflow.collate.rows_per_exposure` first.
    """

    @abstractmethod
    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        """Score one item per row.

        Args:
            batch: An exposures batch (``context``, ``user``, ``item``, ``seq``, ``seq_mask``, ``request_slot``...).

        Returns:
            Logits, shape ``[B]``.
        """

    @abstractmethod
    def score_candidates(self, batch: dict[str, Tensor]) -> Tensor:
        """Score every candidate of every request.

        Args:
            batch: A candidates batch (``context``, ``user``, ``seq``, ``seq_mask``, ``candidates``...).

        Returns:
            Logits, shape ``[B, C]`` (values at padded candidates are unspecified).
        """
