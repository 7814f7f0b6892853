"""Reference optimum by enumeration, for testing re-rankers on small instances.

Enumerates every ordered ``k``-subset of the ``n`` candidates (``n! / (n - k)!`` lists), so it is meant for
``n <= 10`` or so; third-party re-rankers can check themselves against it the way the built-in ones do.
"""

from __future__ import annotations

import itertools
import math
from typing import NamedTuple

import torch
from torch import Tensor

from stcrank.rerank.validation import check_batch, check_scores

MAX_LISTS = 2_000_000
"""Refuse instances with more ordered lists than this (the enumeration is materialised)."""


def ordered_subsets(n: int, k: int, device: torch.device | str | None = None) -> Tensor:
    """Every ordered ``k``-subset of ``range(n)``, in lexicographic order.

    Args:
        n: Number of candidates.
        k: List length, ``0 <= k <= n``.
        device: Device of the result.

    Returns:
        ``LongTensor[n! / (n - k)!, k]``.

    Raises:
        ValueError: If ``k`` is out of range or the enumeration exceeds :data:`MAX_LISTS`.
    """
    if not 0 <= k <= n:
        raise ValueError(f"k must be in [0, n={n}], got {k}")
    count = math.perm(n, k)
    if count > MAX_LISTS:
        raise ValueError(f"{count} ordered lists of {k} out of {n} is too many to enumerate (limit {MAX_LISTS})")
    lists = list(itertools.permutations(range(n), k))
    return torch.tensor(lists, dtype=torch.long, device=device).view(count, k)


class BruteForceResult(NamedTuple):
    """The best list of each request and its sequence value."""

    order: Tensor
    """Candidate indices in display order, ``LongTensor[R, k]`` (the lexicographically first best list)."""
    value: Tensor
    """Its sequence value, ``[R]``."""


def brute_force_rerank(value: Tensor, continue_prob: Tensor, k: int) -> BruteForceResult:
    """Find the list of ``k`` candidates with the highest sequence value by trying all of them.

    Args:
        value: Value of each candidate, ``[R, n]``.
        continue_prob: Continuation probability of each candidate, ``[R, n]``.
        k: List length.

    Returns:
        The best list per request and its value.

    Raises:
        ValueError: On invalid inputs or too large an instance (see :func:`ordered_subsets`).
    """
    check_batch(value, continue_prob, k)
    value, continue_prob = check_scores(value, continue_prob)
    n = value.shape[1]
    lists = ordered_subsets(n, k, device=value.device)
    shown_value = value[:, lists]  # [R, L, k]
    shown_continue = continue_prob[:, lists]
    reach = torch.ones_like(shown_continue)
    reach[..., 1:] = torch.cumprod(shown_continue[..., :-1], dim=2)
    totals = (reach * shown_value).sum(2)
    best = totals.argmax(1)
    return BruteForceResult(order=lists[best], value=totals.gather(1, best[:, None]).squeeze(1))


def random_instances(
    rows: int,
    n: int,
    generator: torch.Generator,
    negative: bool = False,
    dtype: torch.dtype = torch.float64,
) -> tuple[Tensor, Tensor]:
    """Random ``(value, continue_prob)`` batches rich in the cases re-rankers get wrong.

    Rows cycle through four styles: continuous scores; values on a coarse grid (ties, zeros); continuation
    probabilities on ``{0, 0.5, 1}`` (exact 0 and 1, ties); and both on grids. With ``negative=True`` every
    other row is shifted down by 0.5, so it holds negative values too.

    Args:
        rows: Number of requests.
        n: Candidates per request.
        generator: Random generator (determinism under a seed).
        negative: Include rows with negative values.
        dtype: Floating dtype of the result.

    Returns:
        ``(value, continue_prob)``, each ``[rows, n]``.
    """
    value = torch.rand(rows, n, generator=generator, dtype=dtype)
    continue_prob = torch.rand(rows, n, generator=generator, dtype=dtype)
    style = torch.arange(rows) % 4
    coarse_value = (style == 1) | (style == 3)
    coarse_continue = (style == 2) | (style == 3)
    value[coarse_value] = torch.floor(value[coarse_value] * 4) / 4
    continue_prob[coarse_continue] = torch.round(continue_prob[coarse_continue] * 2) / 2
    if negative:
        value[1::2] -= 0.5
    return value, continue_prob
