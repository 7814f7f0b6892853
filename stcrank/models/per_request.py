"""Per-request work once: the row-to-request map of a batch, and cache-sized blocks of rows.

Every candidate of a request, and every exposure of a request in a grouped training batch, shares the request's
user, context and behaviour sequence. A batch can therefore carry the request-level tensors once per request
(``[R, ...]``) with ``request_slot Long[B]``, the request of each row; a network computes its request-side share
once per request and gathers it per row (:func:`rows_of`). Without ``request_slot`` every row is its own request.

The pairwise work of target attention (every candidate against every behaviour) is run over blocks of rows small
enough to stay in the CPU cache (:func:`row_blocks`); when the network is traced (``torch.compile``,
``torch.export``) it is one block, so the traced graph has no shape-dependent loop.
"""

from __future__ import annotations

import torch
from torch import Tensor

BLOCK_ELEMENTS = 1 << 18
"""Default size (in floats, 1 MiB) of the largest intermediate tensor of one block of rows."""


def rows_of(per_request: Tensor, request_slot: Tensor | None) -> Tensor:
    """The request-level values of each row: ``per_request[request_slot]``, or ``per_request`` itself.

    Args:
        per_request: Values per request, ``[R, ...]``.
        request_slot: Request of each row, ``Long[B]`` in ``[0, R)``; None when row ``i`` is request ``i``.

    Returns:
        ``[B, ...]``.
    """
    return per_request if request_slot is None else per_request.index_select(0, request_slot)


def row_blocks(rows: int, elements_per_row: int, block_elements: int = BLOCK_ELEMENTS) -> list[tuple[int, int]]:
    """Consecutive ranges of rows whose intermediate tensors hold about ``block_elements`` floats.

    Args:
        rows: Number of rows.
        elements_per_row: Floats of the largest intermediate tensor per row.
        block_elements: Target size of one block's intermediate tensor.

    Returns:
        ``(start, end)`` ranges covering ``[0, rows)``; a single range while tracing for compile or export.
    """
    if torch.compiler.is_compiling() or rows == 0:
        return [(0, rows)]
    step = max(1, block_elements // max(1, elements_per_row))
    return [(start, min(start + step, rows)) for start in range(0, rows, step)]
