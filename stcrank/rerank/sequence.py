"""The list objective of an immersive feed: expected value under per-item continuation.

A list ``order = (o_1, ..., o_k)`` is shown one item per screen; after item ``o_i`` the user continues to the
next one with probability ``continue_prob[o_i]`` and leaves otherwise. Slot ``i`` is therefore seen with
probability ``p_i = prod_{j<i} continue_prob[o_j]`` (``p_1 = 1``), and the list is worth
``V = sum_i p_i * value[o_i]``.

Contract of both functions: ``value`` and ``continue_prob`` are floating ``[R, n]`` tensors, ``value`` finite and
``continue_prob`` in ``[0, 1]``; ``order`` is an integer ``[R, k]`` tensor whose rows are lists of *distinct*
candidate indices (a list repeating an item is no list a feed can show, and would be worth more than the best
real list). Anything else raises. ``k = 0`` is the empty list, worth exactly 0; ``R = 0`` gives an empty result.
Both are differentiable in ``value`` and ``continue_prob`` (checks run on detached copies).
"""

from __future__ import annotations

import torch
from torch import Tensor

from stcrank.rerank.validation import check_continue_prob, check_order, check_values


def _check_pair(value: Tensor, continue_prob: Tensor) -> None:
    if value.dim() != 2 or value.shape != continue_prob.shape:
        raise ValueError(
            f"value and continue_prob must both be [R, n]; got {tuple(value.shape)} and {tuple(continue_prob.shape)}"
        )


def continue_products(continue_prob: Tensor, order: Tensor) -> Tensor:
    """Probability that each slot of each list is seen.

    Args:
        continue_prob: Probability of continuing after each candidate, shape ``[R, n]``.
        order: Candidate indices in display order, shape ``[R, k]``.

    Returns:
        ``p`` of shape ``[R, k]``: ``p[:, 0] = 1`` and ``p[:, i] = prod_{j<i} continue_prob[order[:, j]]``.

    Raises:
        TypeError: If ``continue_prob`` is not floating point or ``order`` not integer.
        ValueError: If the shapes do not match, ``continue_prob`` leaves ``[0, 1]``, or ``order`` points outside
            the candidates or repeats one.
    """
    if continue_prob.dim() != 2:
        raise ValueError(f"continue_prob must be [R, n], got shape {tuple(continue_prob.shape)}")
    check_continue_prob(continue_prob)
    check_order(order, continue_prob.shape[0], continue_prob.shape[1])
    shown = continue_prob.gather(1, order)
    reach = torch.ones_like(shown)
    if shown.shape[1] > 1:
        reach[:, 1:] = torch.cumprod(shown[:, :-1], dim=1)
    return reach


def sequence_value(value: Tensor, continue_prob: Tensor, order: Tensor) -> Tensor:
    """Expected value of each list: ``V = sum_i p_i * value[order_i]``.

    Args:
        value: Value of showing each candidate, shape ``[R, n]``.
        continue_prob: Probability of continuing after each candidate, shape ``[R, n]``.
        order: Candidate indices in display order, shape ``[R, k]``.

    Returns:
        ``V`` of shape ``[R]``.

    Raises:
        TypeError: If ``value`` or ``continue_prob`` is not floating point, or ``order`` not integer.
        ValueError: If the shapes do not match, ``value`` is not finite, ``continue_prob`` leaves ``[0, 1]``, or
            ``order`` points outside the candidates or repeats one.

    Example:
        >>> value = torch.tensor([[1.0, 2.0]])
        >>> continue_prob = torch.tensor([[0.5, 0.0]])
        >>> sequence_value(value, continue_prob, torch.tensor([[0, 1]]))
        tensor([2.])
    """
    _check_pair(value, continue_prob)
    check_values(value)
    return (continue_products(continue_prob, order) * value.gather(1, order)).sum(1)
