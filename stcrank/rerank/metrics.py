"""Distributed evaluation of re-rankers: a torchmetrics ``Metric`` whose states are sums, so DDP sync is exact.

Each process updates with its own share of the requests (the lists every re-ranker produced for them); after
synchronisation the result is that of one process over all the requests, up to float64 summation order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor
from torchmetrics import Metric

from stcrank.rerank.analysis import hit_rate_at_k
from stcrank.rerank.sequence import sequence_value


class RerankMetrics(Metric):
    """Mean sequence value per re-ranker, its relative gap to a reference re-ranker, and Hit@K.

    ``compute()`` returns, for every re-ranker ``r``:

    * ``r/value``: mean expected list value ``V = sum_i p_i v_i`` over requests (:func:`sequence_value`);
    * ``r/gap``: ``(mean V(reference) - mean V(r)) / |mean V(reference)|`` (0 for the reference itself), when
      ``reference`` is one of the re-rankers;
    * ``r/hit@K``: mean share of ``r``'s top ``K`` that is also in the point-wise top ``K``
      (:func:`hit_rate_at_k`, paper Table 8).

    Args:
        rerankers: Names of the compared re-rankers; ``update`` takes one list per name.
        ks: Depths of Hit@K (each at most the lists' length).
        reference: The re-ranker the gaps are measured against (``"exact"``: the optimum); None for no gaps.

    Raises:
        ValueError: If no re-ranker is named, a name repeats, or ``ks`` holds a value below 1.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(
        self, rerankers: Sequence[str], ks: Sequence[int] = (1, 3, 5, 10), reference: str | None = "exact"
    ) -> None:
        super().__init__()
        self.rerankers = list(rerankers)
        if not self.rerankers or len(set(self.rerankers)) != len(self.rerankers):
            raise ValueError(f"rerankers must be distinct names, at least one; got {self.rerankers}")
        self.ks = [int(k) for k in ks]
        if any(k < 1 for k in self.ks):
            raise ValueError(f"ks must be >= 1, got {self.ks}")
        self.reference = reference if reference in self.rerankers else None
        count = len(self.rerankers)
        self.add_state("value_sum", default=torch.zeros(count, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("hit_sum", default=torch.zeros(count, len(self.ks), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("num_requests", default=torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(
        self, value: Tensor, continue_prob: Tensor, orders: Mapping[str, Tensor], pointwise_order: Tensor
    ) -> None:
        """Add a batch of requests.

        Args:
            value: Value of each candidate, ``[R, n]``.
            continue_prob: Probability of continuing after each candidate, ``[R, n]``.
            orders: Re-ranker name -> its list, candidate indices ``[R, k]`` (every name of ``rerankers``).
            pointwise_order: The point-wise order (candidates by descending score), ``[R, K]`` with ``K >= max(ks)``.

        Raises:
            KeyError: If a re-ranker's list is missing.
            ValueError: On shape mismatches or out-of-range indices.
        """
        missing = [name for name in self.rerankers if name not in orders]
        if missing:
            raise KeyError(f"RerankMetrics.update: no list for re-rankers {missing} (given: {sorted(orders)})")
        for index, name in enumerate(self.rerankers):
            order = orders[name]
            self.value_sum[index] += sequence_value(value.double(), continue_prob.double(), order).sum()
            for j, k in enumerate(self.ks):
                self.hit_sum[index, j] += hit_rate_at_k(pointwise_order, order, k, reduction="none").double().sum()
        self.num_requests += value.shape[0]

    def compute(self) -> dict[str, Tensor]:
        """The metrics by name (see the class docstring); all NaN before any request (a mean of nothing)."""
        count = self.num_requests.double().where(self.num_requests > 0, float("nan"))
        means = self.value_sum / count
        out: dict[str, Tensor] = {}
        reference = means[self.rerankers.index(self.reference)] if self.reference is not None else None
        for index, name in enumerate(self.rerankers):
            out[f"{name}/value"] = means[index]
            if reference is not None:
                same = means[index] == reference
                out[f"{name}/gap"] = torch.where(same, 0.0, (reference - means[index]) / reference.abs())
            for j, k in enumerate(self.ks):
                out[f"{name}/hit@{k}"] = self.hit_sum[index, j] / count
        return out
