"""How a re-ranked list differs from the point-wise one (paper Table 8) and from the optimum.

The paper separates the two effects of re-ranking: a *set change* (other items reach the top ``K``) and a
*permutation change* (the same items in another order). :func:`hit_rate_at_k` measures the first: the share of
the re-ranked top ``K`` that the point-wise top ``K`` also holds; :func:`position_agreement_at_k` and
:func:`rerank_change_rates` measure both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, NamedTuple

import torch
from torch import Tensor

from stcrank.rerank.validation import check_order


def _check_lists(pointwise_order: Tensor, reranked_order: Tensor, k: int) -> None:
    if pointwise_order.dim() != 2 or reranked_order.dim() != 2:
        raise ValueError(
            f"pointwise_order and reranked_order must be [R, K] lists; got shapes {tuple(pointwise_order.shape)} "
            f"and {tuple(reranked_order.shape)}"
        )
    if pointwise_order.shape[0] != reranked_order.shape[0]:
        raise ValueError(
            f"pointwise_order has {pointwise_order.shape[0]} requests but reranked_order has {reranked_order.shape[0]}"
        )
    width = min(pointwise_order.shape[1], reranked_order.shape[1])
    if not 1 <= k <= width:
        raise ValueError(f"k must be in [1, {width}] (the shorter list's length), got {k}")
    for name, order in (("pointwise_order", pointwise_order), ("reranked_order", reranked_order)):
        check_order(order, order.shape[0], torch.iinfo(torch.long).max, name=name)


def _reduce(per_request: Tensor, reduction: str) -> Tensor:
    if reduction == "none":
        return per_request
    if reduction == "mean":
        if per_request.numel() == 0:
            raise ValueError("cannot average over an empty batch of requests")
        return per_request.mean()
    raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")


def hit_rate_at_k(
    pointwise_order: Tensor, reranked_order: Tensor, k: int, reduction: Literal["mean", "none"] = "mean"
) -> Tensor:
    """Share of the re-ranked top ``k`` items that are also in the point-wise top ``k``.

    ``Hit@k = |top_k(reranked) ∩ top_k(pointwise)| / k`` per request, averaged over requests (paper Table 8).
    ``Hit@k = 1`` means the two lists agree on the set of their first ``k`` items (order may differ).

    Args:
        pointwise_order: Candidate indices of the point-wise ranking, ``[R, K1]`` with ``K1 >= k``.
        reranked_order: Candidate indices of the re-ranked list, ``[R, K2]`` with ``K2 >= k``.
        k: Depth compared.
        reduction: ``"mean"`` for a scalar, ``"none"`` for the per-request rates ``[R]``.

    Returns:
        A float tensor: the mean hit rate, or one rate per request.

    Raises:
        ValueError: On mismatched shapes, ``k`` out of range, or an empty batch with ``"mean"``.

    Example:
        >>> hit_rate_at_k(torch.tensor([[0, 1, 2]]), torch.tensor([[2, 0, 5]]), k=2)
        tensor(0.5000)
    """
    _check_lists(pointwise_order, reranked_order, k)
    top_reranked = reranked_order[:, :k]
    top_pointwise = pointwise_order[:, :k]
    hits = (top_reranked.unsqueeze(2) == top_pointwise.unsqueeze(1)).any(2)
    return _reduce(hits.float().mean(1), reduction)


def position_agreement_at_k(
    pointwise_order: Tensor, reranked_order: Tensor, k: int, reduction: Literal["mean", "none"] = "mean"
) -> Tensor:
    """Share of the first ``k`` slots that hold the same item in both lists.

    Args:
        pointwise_order: Candidate indices of the point-wise ranking, ``[R, K1]`` with ``K1 >= k``.
        reranked_order: Candidate indices of the re-ranked list, ``[R, K2]`` with ``K2 >= k``.
        k: Depth compared.
        reduction: ``"mean"`` for a scalar, ``"none"`` for the per-request rates ``[R]``.

    Returns:
        A float tensor: the mean agreement, or one value per request.

    Raises:
        ValueError: On mismatched shapes, ``k`` out of range, or an empty batch with ``"mean"``.
    """
    _check_lists(pointwise_order, reranked_order, k)
    same = reranked_order[:, :k] == pointwise_order[:, :k]
    return _reduce(same.float().mean(1), reduction)


class ChangeRates(NamedTuple):
    """Share of requests by the kind of change re-ranking made to the top ``k`` (the three sum to 1)."""

    unchanged: Tensor
    """Same items in the same order."""
    order_only: Tensor
    """Same set of items, different order (a pure permutation change)."""
    set_changed: Tensor
    """At least one item of the re-ranked top ``k`` is not in the point-wise top ``k``."""


def rerank_change_rates(pointwise_order: Tensor, reranked_order: Tensor, k: int) -> ChangeRates:
    """Split requests into unchanged, permutation-only and set-changing re-rankings of the top ``k``.

    Args:
        pointwise_order: Candidate indices of the point-wise ranking, ``[R, K1]`` with ``K1 >= k``.
        reranked_order: Candidate indices of the re-ranked list, ``[R, K2]`` with ``K2 >= k``.
        k: Depth compared.

    Returns:
        The three shares as 0-d float tensors.

    Raises:
        ValueError: On mismatched shapes, ``k`` out of range, or an empty batch.
    """
    same_set = hit_rate_at_k(pointwise_order, reranked_order, k, reduction="none") == 1
    same_order = position_agreement_at_k(pointwise_order, reranked_order, k, reduction="none") == 1
    unchanged = _reduce(same_order.float(), "mean")
    order_only = _reduce((same_set & ~same_order).float(), "mean")
    set_changed = _reduce((~same_set).float(), "mean")
    return ChangeRates(unchanged=unchanged, order_only=order_only, set_changed=set_changed)


def hit_rate_table(
    pointwise_order: Tensor, reranked_order: Tensor, ks: Sequence[int] = (1, 3, 5, 10)
) -> dict[str, float]:
    """Hit rates at several depths, keyed ``"hit@k"`` (the layout of paper Table 8).

    Args:
        pointwise_order: Candidate indices of the point-wise ranking, ``[R, K1]``.
        reranked_order: Candidate indices of the re-ranked list, ``[R, K2]``.
        ks: Depths to report; each at most ``min(K1, K2)``.

    Returns:
        ``{"hit@1": ..., "hit@3": ..., ...}`` as Python floats.
    """
    return {f"hit@{k}": float(hit_rate_at_k(pointwise_order, reranked_order, k)) for k in ks}


def relative_gap(reference: Tensor, value: Tensor) -> Tensor:
    """Relative shortfall of ``value`` against ``reference``: ``(reference - value) / |reference|``.

    Used to report how far a heuristic list (beam search) falls short of the optimum (``exact``).

    Args:
        reference: Reference sequence values, ``[R]``.
        value: Compared sequence values, ``[R]``.

    Returns:
        ``[R]`` gaps: 0 where the values are equal (including both zero), ``±inf`` where only the reference
        is zero.

    Raises:
        ValueError: If the shapes differ.
    """
    if reference.shape != value.shape:
        raise ValueError(
            f"reference and value must have the same shape, got {tuple(reference.shape)} and {tuple(value.shape)}"
        )
    gap = (reference - value) / reference.abs()
    return torch.where(reference == value, torch.zeros_like(gap), gap)
