"""Per-item work once: the distinct items of a batch of candidates.

The candidates of a batch of requests repeat (popular items are candidates of many requests, and every padded
slot is the same all-zero item), and an item tower is a function of the item's features alone. Computing it on
the distinct feature rows and gathering the result back gives the same values for a fraction of the work.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

MAX_DISTINCT_SHARE = 0.8
"""Above this share of distinct rows the gather back costs more than the rows it saves: rows are kept as they are."""


def distinct_rows(ids: Tensor, max_share: float = MAX_DISTINCT_SHARE) -> tuple[Tensor, Tensor] | None:
    """The distinct rows of an id matrix, keyed by its first column (an item's id), and where each row went.

    Rows are grouped by their first column and one row of each group stands for it; when some group holds two
    different rows (an id with two feature rows) nothing is merged. The result is exact either way.

    Args:
        ids: Integer features ``[N, F]``, the item id first.
        max_share: Merge only when at most this share of the rows is distinct.

    Returns:
        ``(distinct [U, F], inverse [N])`` with ``distinct[inverse] == ids``, or None when rows are kept as they
        are (too few repeats, an id with two feature rows, or a traced network, whose shapes must not depend on
        the data).
    """
    if torch.compiler.is_compiling() or ids.shape[0] < 2:
        return None
    # The groups of equal ids, from one sort of the ids (as int32, twice as fast to sort; ids too large for it
    # could only merge different rows, which the check below refuses).
    key, order = torch.sort(ids[:, 0].to(torch.int32))
    first = torch.ones_like(key, dtype=torch.bool)
    torch.ne(key[1:], key[:-1], out=first[1:])
    groups = int(first.sum())
    if groups > max_share * len(key):
        return None
    inverse = torch.empty_like(order).index_copy_(0, order, first.cumsum(0) - 1)
    distinct = ids.index_select(0, order[first])
    if not torch.equal(distinct.index_select(0, inverse), ids):
        return None
    return distinct, inverse


def per_distinct_row(function: Callable[[Tensor], Tensor], ids: Tensor) -> Tensor:
    """``function(ids)`` for ids ``[..., F]``, computed once per distinct row (:func:`distinct_rows`).

    Args:
        function: Maps ids ``[N, F]`` to values ``[N, ...]``, row by row.
        ids: Integer features ``[..., F]``.

    Returns:
        ``function`` of every row, ``[..., ...]``.
    """
    flat = ids.reshape(-1, ids.shape[-1])
    merged = distinct_rows(flat)
    if merged is None:
        values = function(flat)
    else:
        distinct, inverse = merged
        values = function(distinct).index_select(0, inverse)
    return values.view(*ids.shape[:-1], *values.shape[1:])
