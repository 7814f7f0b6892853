"""Deterministic selection primitives: top-k with ties broken by index, and mask compaction.

:func:`torch.topk` leaves the order of equal values unspecified, and which of several equal values is kept at
the cut. Re-rankers must be reproducible (a request gets the same list alone or in a batch, on CPU or GPU),
so every selection here breaks ties by the lower index, at almost the cost of one :func:`torch.topk`: the
exact but slower paths run only on the rows that actually hold ties.
"""

from __future__ import annotations

import torch
from torch import Tensor


def compact_mask(mask: Tensor, width: int | None = None) -> Tensor:
    """Positions of the ``True`` entries of each row, in increasing order, padded with ``-1``.

    Args:
        mask: Boolean, shape ``[R, N]``.
        width: Number of columns of the result; defaults to the largest number of ``True`` entries in a row.
            Rows with more entries than ``width`` keep their first ``width``.

    Returns:
        ``LongTensor[R, width]``.
    """
    rows = mask.shape[0]
    # nonzero() lists the True entries row by row, each row's in increasing order: slot = rank inside the row.
    row, column = mask.nonzero(as_tuple=True)
    counts = torch.bincount(row, minlength=rows)
    slot = torch.arange(row.numel(), device=mask.device) - (counts.cumsum(0) - counts).index_select(0, row)
    if width is None:
        width = int(counts.max()) if row.numel() else 0
    else:
        fits = (slot < width).nonzero().squeeze(1)
        row, column, slot = row.index_select(0, fits), column.index_select(0, fits), slot.index_select(0, fits)
    out = torch.full((rows, width), -1, dtype=torch.long, device=mask.device)
    return out.index_put_((row, slot), column)


def _select_with_ties(x: Tensor, threshold: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Exact top-``k`` of rows whose ``k``-th largest value ``threshold`` is tied: lowest indices win."""
    above = x > threshold[:, None]
    at = x == threshold[:, None]
    need = k - above.sum(1, keepdim=True)
    chosen = above | (at & (at.cumsum(1) <= need))
    index = compact_mask(chosen, k)
    values, order = torch.sort(x.gather(1, index), dim=1, descending=True, stable=True)
    return values, index.gather(1, order)


def stable_topk(x: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Largest ``k`` entries of each row, in decreasing order, ties broken by the lower index.

    The result equals ``torch.sort(x, dim=1, descending=True, stable=True)`` cut to ``k`` columns, whatever the
    ties, but costs about one :func:`torch.topk` when the rows hold no ties at the cut.

    Args:
        x: Values, shape ``[R, N]``; ``-inf`` is allowed, NaN is not.
        k: Number of entries to keep, ``0 <= k <= N``.

    Returns:
        ``(values, indices)``, each of shape ``[R, k]``.

    Raises:
        ValueError: If ``x`` is not 2-D or ``k`` is out of range.
    """
    if x.dim() != 2:
        raise ValueError(f"x must be [R, N], got shape {tuple(x.shape)}")
    rows, size = x.shape
    if not 0 <= k <= size:
        raise ValueError(f"k must be in [0, {size}], got {k}")
    if rows == 0 or k == 0:
        return x[:, :k], torch.zeros(rows, k, dtype=torch.long, device=x.device)
    if 2 * k > size:
        # A selection of more than half the row costs about as much as a full sort.
        values, index = torch.sort(x, dim=1, descending=True, stable=True)
        return values[:, :k].contiguous(), index[:, :k].contiguous()
    # One extra entry tells whether the cut falls inside a run of equal values.
    values, index = torch.topk(x, k + 1, dim=1, sorted=True)
    cut = values[:, k] == values[:, k - 1]
    values, index = values[:, :k].contiguous(), index[:, :k].contiguous()
    if bool(cut.any()):
        rows_cut = cut.nonzero().squeeze(1)
        values[rows_cut], index[rows_cut] = _select_with_ties(x[rows_cut], values[rows_cut, -1], k)
    if k > 1:
        tied = (values[:, 1:] == values[:, :-1]).any(1) & ~cut
        if bool(tied.any()):
            rows_tied = tied.nonzero().squeeze(1)
            by_index, order = torch.sort(index[rows_tied], dim=1)
            tied_values, order = torch.sort(values[rows_tied].gather(1, order), dim=1, descending=True, stable=True)
            values[rows_tied], index[rows_tied] = tied_values, by_index.gather(1, order)
    return values, index
