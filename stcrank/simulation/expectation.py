"""Closed-form expected outcomes of one served F-stage list, over the user's watch, purchase and exit draws.

A served list of ``k`` items is seen from its first item until the user exits. When item ``j`` is seen, its watch
time gives a valid view (IPV) with probability ``ipv_j`` whatever came before; a purchase, possible only after a
valid view, has probability ``cvr_j(c)``, where ``c`` counts the valid views of *earlier items of the same list in
the same category* (each raises the category's involvement factor, see :mod:`stcrank.simulation.truth`); after the
item the user exits with ``e1_j`` after a purchase and ``e0_j`` otherwise. What happens at item ``j`` thus depends
on the list's earlier items only through (a) whether the user is still there and (b) which of the earlier items
were valid views. The expectation enumerates (b): the IPV patterns of the items whose category comes back later
in the list (at most ``2 ** (k - 1)`` patterns, 512 for ``k = 10``), each weighted by the probability of that
pattern *and* of the user staying, so every expectation is exact:

* ``P(pattern, still there after item j) = sum over the pattern's branches of`` ``(1 - ipv_j)(1 - e0_j)`` (no
  valid view) or ``(ipv_j - cvr_j)(1 - e0_j) + cvr_j (1 - e1_j)`` (a valid view, with or without a purchase);
* ``E[purchases] = sum_j sum_patterns P(pattern, seen j) cvr_j(c(pattern))`` (GMV: times the price);
  ``E[IPV] = sum_j P(seen j) ipv_j``; ``E[depth] = sum_j P(seen j)``.

Scoring every served list by these expectations instead of the sampled outcomes (and continuing the session
with the sampled outcomes, as before) is unbiased: the session's outcome is the sum over its requests, each
request is reached or not by what happened before it, and the expectation of a request's outcomes given the
state it starts from is what is added (the tower property). It removes the noise of the exits, views and
purchases within each list, which is most of a session's noise when most sessions end in their first list.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["ListExpectation", "expected_list_outcomes"]


@dataclass(frozen=True)
class ListExpectation:
    """Expected outcomes of served lists, each ``[R]`` (float64).

    Attributes:
        purchases: Expected purchases.
        ipv: Expected valid views.
        depth: Expected items seen.
        gmv: Expected purchased value.
        survive: Probability that the user sees every item and swipes on after the last (a next request follows).
    """

    purchases: Tensor
    ipv: Tensor
    depth: Tensor
    gmv: Tensor
    survive: Tensor


def expected_list_outcomes(
    ipv: Tensor, purchase: Tensor, e0: Tensor, e1: Tensor, same_category: Tensor, price: Tensor
) -> ListExpectation:
    """Expected purchases, valid views, depth and purchased value of served lists, in closed form.

    Args:
        ipv: ``P(valid view)`` of each listed item, ``[R, k]``.
        purchase: ``purchase[r, j, c] = P(purchase of item j | c earlier valid views of its category in the list)``,
            ``[R, k, k]`` (``c`` runs over ``0 .. k - 1``; entries for counts a list cannot reach are not read).
        e0: Exit probability after item ``j`` without a purchase, ``[R, k]``.
        e1: Exit probability after item ``j`` after a purchase, ``[R, k]``.
        same_category: ``same_category[r, i, j]``: items ``i`` and ``j`` are of one category, ``[R, k, k]`` (only
            ``i < j`` is read).
        price: Price of each item, ``[R, k]``.

    Returns:
        The expectations, each ``[R]``.

    Raises:
        ValueError: If the shapes disagree.
    """
    rows, k = ipv.shape
    if purchase.shape != (rows, k, k) or same_category.shape != (rows, k, k):
        raise ValueError(
            f"expected purchase and same_category of shape {(rows, k, k)}; "
            f"got {tuple(purchase.shape)}, {tuple(same_category.shape)}"
        )
    if not e0.shape == e1.shape == price.shape == (rows, k):
        raise ValueError(f"expected e0, e1 and price of shape {(rows, k)}")
    ipv, purchase, e0, e1, price = (t.double() for t in (ipv, purchase, e0, e1, price))
    same = same_category.bool()
    weight = torch.ones(rows, 1, dtype=torch.float64)  # P(pattern, seen item j), over the patterns so far
    branched: list[int] = []  # items whose valid view is a bit of the pattern index (in bit order)
    bits = torch.zeros(1, 0, dtype=torch.float64)  # [patterns, len(branched)]
    out = {name: torch.zeros(rows, dtype=torch.float64) for name in ("purchases", "ipv", "depth", "gmv")}
    survive = torch.zeros(rows, dtype=torch.float64)
    for j in range(k):
        if branched:
            # Earlier valid views of item j's category, per pattern: [R, patterns].
            count = same[:, branched, j].double() @ bits.T
            cvr = purchase[:, j, :].gather(1, count.long())
        else:
            cvr = purchase[:, j, :1]
        seen = weight.sum(1)
        bought = (weight * cvr).sum(1)
        out["depth"] += seen
        out["ipv"] += seen * ipv[:, j]
        out["purchases"] += bought
        out["gmv"] += bought * price[:, j]
        stay_without_view = ((1.0 - ipv[:, j]) * (1.0 - e0[:, j]))[:, None]
        stay_with_view = (ipv[:, j, None] - cvr).clamp_min(0.0) * (1.0 - e0[:, j, None]) + cvr * (1.0 - e1[:, j, None])
        if j == k - 1:
            survive = (weight * (stay_without_view + stay_with_view)).sum(1)
        elif bool(same[:, j, j + 1 :].any()):
            # The valid view of item j moves the purchase probability of a later item: keep both branches apart.
            weight = torch.cat([weight * stay_without_view, weight * stay_with_view], dim=1)
            patterns = bits.shape[0]
            bits = torch.cat(
                [
                    torch.cat([bits, torch.zeros(patterns, 1, dtype=torch.float64)], dim=1),
                    torch.cat([bits, torch.ones(patterns, 1, dtype=torch.float64)], dim=1),
                ]
            )
            branched.append(j)
        else:
            weight = weight * (stay_without_view + stay_with_view)
    return ListExpectation(out["purchases"], out["ipv"], out["depth"], out["gmv"], survive)
