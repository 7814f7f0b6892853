"""Metrics of a two-stage cascade over fixed candidate lists (the LCRON benchmark on RecFlow).

Every request is a list of candidates with a graded relevance ``y`` (higher is better), scored by two stages:
the first stage (retrieval) keeps its top ``first_k``, the second stage (pre-rank) keeps its top ``second_k`` of
those. The **ground truth** is the request's top ``size`` candidates by relevance (LCRON: the 10 items the
ranking stage put first).

Definitions (per request; the metric is the mean over requests with at least one real candidate):

* **Ground-truth membership** ``g_i``: with ``a_i`` the number of real candidates of strictly higher relevance
  and ``t_i`` the number of real candidates of relevance equal to ``y_i`` (itself included),
  ``g_i = clamp(size - a_i, 0, t_i) / t_i``. It is 1 for candidates surely among the top ``size``, 0 for those
  surely outside, and the chance of being picked when a tie straddles the boundary (the reference code breaks
  that tie at random). ``sum_i g_i = min(size, n)`` for ``n`` real candidates.
* **Set recall** ``Recall@size@k = sum_{i in top k} g_i / sum_i g_i`` (LCRON's ``Recall@10@20`` of the second
  stage and ``Recall@10@30`` of the first, each over the whole list).
* **NDCG@k** with linear gains (LCRON's, through scikit-learn's ``ndcg_score``):
  ``DCG@k = sum_{r < k} y_(r) / log2(r + 2)`` over the stage's order, divided by the same sum over the order by
  relevance; 0 when that is 0.
* **Joint recall**: ``sum_{i in S2} g_i / sum_i g_i``, where ``S1`` is the first stage's top ``first_k`` and
  ``S2`` the second stage's top ``second_k`` among ``S1`` (LCRON's end-to-end recall of the cascade).

**Ties are pessimistic**, as everywhere in stcrank: among candidates of equal score the one of lower relevance
ranks first (then the earlier column), so a model never gains from tied scores; a model with constant scores
gets the worst value. The reference code instead shuffles the candidates and breaks ties at random, so a model
with tied scores gets its expected value there; with real-valued logits ties do not occur.

Ranks are computed by pairwise comparison (``O(L^2)`` per request, no sort and no Python loop), fine for the
benchmark's 40 candidates. :class:`CascadeMetrics` accumulates float64 sums and a count
(``dist_reduce_fx="sum"``), so under DDP its result is exactly the metric of the union of the processes' data.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor
from torchmetrics import Metric

__all__ = [
    "CascadeMetrics",
    "CascadeValues",
    "cascade_values",
    "graded_ndcg",
    "ground_truth",
    "joint_recall",
    "pessimistic_rank",
    "set_recall",
]


def _check(name: str, scores: Sequence[Tensor], relevance: Tensor, mask: Tensor) -> None:
    if relevance.dim() != 2:
        raise ValueError(f"{name}: relevance must be [B, L], got shape {tuple(relevance.shape)}")
    if mask.shape != relevance.shape or mask.dtype != torch.bool:
        raise ValueError(f"{name}: mask must be a bool tensor of shape {tuple(relevance.shape)}")
    if bool(torch.isnan(relevance[mask]).any()):
        raise ValueError(f"{name}: relevance holds NaN on real candidates (mask True)")
    for score in scores:
        if score.shape != relevance.shape:
            raise ValueError(
                f"{name}: scores must have the shape of relevance {tuple(relevance.shape)}, got {tuple(score.shape)}"
            )
        if bool(torch.isnan(score[mask]).any()):
            raise ValueError(f"{name}: scores hold NaN on real candidates (mask True); expected finite scores")


def _check_k(name: str, what: str, k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"{name}: {what} must be a positive integer, got {k!r}")


def ground_truth(relevance: Tensor, mask: Tensor, size: int) -> Tensor:
    """Membership of each candidate in its request's top ``size`` by relevance (fractional on a boundary tie).

    Args:
        relevance: Graded relevance, ``[B, L]``.
        mask: Bool ``[B, L]``, ``True`` on real candidates.
        size: Number of ground-truth items per request.

    Returns:
        ``g`` in ``[0, 1]``, ``[B, L]``, 0 on padding; each row sums to ``min(size, #real)``.
    """
    _check_k("ground_truth", "size", size)
    y = torch.where(mask, relevance, torch.zeros_like(relevance)).double()
    real = mask.unsqueeze(1)  # [B, 1, L]: the compared-with candidate j is real
    above = ((y.unsqueeze(1) > y.unsqueeze(2)) & real).sum(-1)  # [B, L]: a_i
    tied = ((y.unsqueeze(1) == y.unsqueeze(2)) & real).sum(-1).clamp(min=1)  # t_i
    slots = (size - above).clamp(min=0)
    share = torch.minimum(slots, tied).double() / tied.double()
    dtype = relevance.dtype if relevance.is_floating_point() else torch.float32
    return torch.where(mask, share, torch.zeros_like(share)).to(dtype)


def pessimistic_rank(scores: Tensor, relevance: Tensor, mask: Tensor) -> Tensor:
    """0-based position of each real candidate when its request is sorted by score, descending.

    Ties are pessimistic: among equal scores, lower relevance first, then the earlier column. Padding gets
    position ``L`` (after every real candidate).

    Args:
        scores: ``[B, L]``.
        relevance: ``[B, L]``.
        mask: Bool ``[B, L]``.

    Returns:
        Long ``[B, L]``; on each row the real candidates hold ``0 .. n - 1``.
    """
    width = scores.shape[-1]
    s_i, s_j = scores.unsqueeze(2), scores.unsqueeze(1)  # i: the ranked candidate, j: a competitor
    y_i, y_j = relevance.unsqueeze(2), relevance.unsqueeze(1)
    column = torch.arange(width, device=scores.device)
    earlier = (column.unsqueeze(1) > column.unsqueeze(0)).unsqueeze(0)  # j < i
    before = (s_j > s_i) | ((s_j == s_i) & ((y_j < y_i) | ((y_j == y_i) & earlier)))
    rank = (before & mask.unsqueeze(1)).sum(-1)
    return torch.where(mask, rank, torch.full_like(rank, width))


def _ideal_rank(relevance: Tensor, mask: Tensor) -> Tensor:
    """Position of each real candidate in the order by relevance, descending (ties by column)."""
    return pessimistic_rank(relevance, torch.zeros_like(relevance), mask)


def _recall_of(selected: Tensor, truth: Tensor) -> Tensor:
    total = truth.sum(-1)
    hit = (truth * selected).sum(-1)
    return torch.where(total > 0, hit / total.clamp(min=1e-12), torch.zeros_like(total))


def set_recall(scores: Tensor, relevance: Tensor, mask: Tensor, size: int, k: int) -> Tensor:
    """``Recall@size@k`` of each request: the share of the ground truth inside the stage's top ``k``.

    Args:
        scores: The stage's scores, ``[B, L]``.
        relevance: Graded relevance, ``[B, L]``.
        mask: Bool ``[B, L]``.
        size: Ground-truth items per request.
        k: Items the stage keeps.

    Returns:
        Float ``[B]`` (0 for a request without real candidates).
    """
    _check("set_recall", [scores], relevance, mask)
    _check_k("set_recall", "k", k)
    truth = ground_truth(relevance, mask, size).double()
    return _recall_of((pessimistic_rank(scores, relevance, mask) < k).double(), truth)


def graded_ndcg(scores: Tensor, relevance: Tensor, mask: Tensor, k: int) -> Tensor:
    """NDCG@k with linear gains of each request (0 when the ideal DCG is 0).

    Args:
        scores: ``[B, L]``.
        relevance: Graded relevance (the gains), ``[B, L]``.
        mask: Bool ``[B, L]``.
        k: Cut-off.

    Returns:
        Float ``[B]``.
    """
    _check("graded_ndcg", [scores], relevance, mask)
    _check_k("graded_ndcg", "k", k)
    gain = torch.where(mask, relevance, torch.zeros_like(relevance)).double()

    def dcg(rank: Tensor) -> Tensor:
        discount = torch.where(rank < k, 1.0 / torch.log2(rank.double() + 2.0), torch.zeros_like(gain))
        return (gain * discount).sum(-1)

    ideal = dcg(_ideal_rank(relevance, mask))
    actual = dcg(pessimistic_rank(scores, relevance, mask))
    return torch.where(ideal > 0, actual / ideal.clamp(min=1e-300), torch.zeros_like(ideal))


def joint_recall(
    first: Tensor, second: Tensor, relevance: Tensor, mask: Tensor, size: int, first_k: int, second_k: int
) -> Tensor:
    """End-to-end recall of the two-stage cascade of each request.

    The first stage keeps its top ``first_k`` by ``first``; the second keeps its top ``second_k`` of those by
    ``second``; the result is the share of the ground truth that survives both.

    Args:
        first: First-stage scores, ``[B, L]``.
        second: Second-stage scores, ``[B, L]``.
        relevance: Graded relevance, ``[B, L]``.
        mask: Bool ``[B, L]``.
        size: Ground-truth items per request.
        first_k: Items the first stage keeps.
        second_k: Items the second stage keeps (at most ``first_k``).

    Returns:
        Float ``[B]``.
    """
    _check("joint_recall", [first, second], relevance, mask)
    _check_k("joint_recall", "first_k", first_k)
    _check_k("joint_recall", "second_k", second_k)
    if second_k > first_k:
        raise ValueError(f"joint_recall: second_k={second_k} must not exceed first_k={first_k}")
    truth = ground_truth(relevance, mask, size).double()
    kept = mask & (pessimistic_rank(first, relevance, mask) < first_k)
    survived = kept & (pessimistic_rank(second, relevance, kept) < second_k)
    return _recall_of(survived.double(), truth)


class CascadeValues(NamedTuple):
    """Per-request values of the cascade metrics, each float64 ``[B]``, and which requests count."""

    first_ndcg: Tensor
    second_ndcg: Tensor
    first_recall: Tensor
    second_recall: Tensor
    joint_recall: Tensor
    counted: Tensor
    """Bool ``[B]``: the request has at least one real candidate."""


def cascade_values(
    first: Tensor,
    second: Tensor,
    relevance: Tensor,
    mask: Tensor,
    *,
    size: int = 10,
    first_k: int = 30,
    second_k: int = 20,
    ndcg_k: int = 10,
) -> CascadeValues:
    """Every cascade metric of every request of a batch.

    Args:
        first: First-stage (retrieval) scores, ``[B, L]``.
        second: Second-stage (pre-rank) scores, ``[B, L]``.
        relevance: Graded relevance, ``[B, L]``.
        mask: Bool ``[B, L]``.
        size: Ground-truth items per request (LCRON: 10).
        first_k: Items the first stage keeps (LCRON: 30).
        second_k: Items the second stage keeps (LCRON: 20).
        ndcg_k: Cut-off of the per-stage NDCG (LCRON: 10).

    Returns:
        The values; each stage's recall is over the whole list (``Recall@size@first_k`` for the first stage,
        ``Recall@size@second_k`` for the second).
    """
    return CascadeValues(
        first_ndcg=graded_ndcg(first, relevance, mask, ndcg_k),
        second_ndcg=graded_ndcg(second, relevance, mask, ndcg_k),
        first_recall=set_recall(first, relevance, mask, size, first_k),
        second_recall=set_recall(second, relevance, mask, size, second_k),
        joint_recall=joint_recall(first, second, relevance, mask, size, first_k, second_k),
        counted=mask.any(-1),
    )


class CascadeMetrics(Metric):
    """Per-stage NDCG and set recall and the joint recall of a two-stage cascade (see the module docstring).

    ``compute()`` returns a dict keyed (with the default names and cut-offs) ``retrieval_ndcg@10``,
    ``prerank_ndcg@10``, ``retrieval_recall@10@30``, ``prerank_recall@10@20`` and ``joint_recall``: means over
    the requests with at least one real candidate, 0 when none was seen.

    Args:
        size: Ground-truth items per request.
        first_k: Items the first stage keeps.
        second_k: Items the second stage keeps.
        ndcg_k: Cut-off of the per-stage NDCG.
        stage_names: Names of the two stages in the keys.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(
        self,
        size: int = 10,
        first_k: int = 30,
        second_k: int = 20,
        ndcg_k: int = 10,
        stage_names: tuple[str, str] = ("retrieval", "prerank"),
    ) -> None:
        super().__init__()
        for what, k in (("size", size), ("first_k", first_k), ("second_k", second_k), ("ndcg_k", ndcg_k)):
            _check_k("CascadeMetrics", what, k)
        if second_k > first_k:
            raise ValueError(f"CascadeMetrics: second_k={second_k} must not exceed first_k={first_k}")
        self.size, self.first_k, self.second_k, self.ndcg_k = size, first_k, second_k, ndcg_k
        first, second = stage_names
        self.names = (
            f"{first}_ndcg@{ndcg_k}",
            f"{second}_ndcg@{ndcg_k}",
            f"{first}_recall@{size}@{first_k}",
            f"{second}_recall@{size}@{second_k}",
            "joint_recall",
        )
        self.add_state("sums", default=torch.zeros(len(self.names), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("requests", default=torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, first: Tensor, second: Tensor, relevance: Tensor, mask: Tensor) -> None:
        """Add a batch of requests.

        Args:
            first: First-stage scores, ``[B, L]``.
            second: Second-stage scores, ``[B, L]``.
            relevance: Graded relevance, ``[B, L]``.
            mask: Bool ``[B, L]``, ``True`` on real candidates.
        """
        values = cascade_values(
            first.detach(),
            second.detach(),
            relevance,
            mask,
            size=self.size,
            first_k=self.first_k,
            second_k=self.second_k,
            ndcg_k=self.ndcg_k,
        )
        counted = values.counted.double()
        stacked = torch.stack([values[i] for i in range(5)])  # [5, B]
        self.sums += (stacked * counted).sum(-1)
        self.requests += values.counted.sum()

    def compute(self) -> dict[str, Tensor]:
        """Means over the counted requests (0 when none was seen), keyed by metric name."""
        count = self.requests.double()
        means = torch.where(count > 0, self.sums / count.clamp(min=1), torch.zeros_like(self.sums)).float()
        return {name: means[i] for i, name in enumerate(self.names)}
