"""Per-request work once: the row-to-request map of a batch, and cache-sized blocks of rows.

Every candidate of a request, and every exposure of a request in a grouped training batch, shares the request's
user, context and behaviour sequence. A batch can therefore carry the request-level tensors once per request
(``[R, ...]``) with ``request_slot Long[B]``, the request of each row; a network computes its request-side share
once per request and gathers it per row (:func:`rows_of`). Without ``request_slot`` every row is its own request.

The pairwise work of target attention (every candidate against every behaviour) is run over blocks of rows small
enough to stay in the CPU cache (:func:`block_sizes`); when the network is traced (``torch.compile``,
``torch.export``) it is one block, so the traced graph has no shape-dependent loop.
"""

from __future__ import annotations

import torch
from torch import Tensor

BLOCK_ELEMENTS = 1 << 20
"""Default size (in floats, 4 MiB) of the largest intermediate tensor of one block of rows on a CPU."""

ACCELERATOR_BLOCK_ELEMENTS = 1 << 26
"""Smallest block (in floats, 256 MiB) on an accelerator, where blocks only bound memory and each costs launches."""


def rows_of(per_request: Tensor, request_slot: Tensor | None) -> Tensor:
    """The request-level values of each row: ``per_request[request_slot]``, or ``per_request`` itself.

    Args:
        per_request: Values per request, ``[R, ...]``.
        request_slot: Request of each row, ``Long[B]`` in ``[0, R)``; None when row ``i`` is request ``i``.

    Returns:
        ``[B, ...]``.
    """
    return per_request if request_slot is None else per_request.index_select(0, request_slot)


def request_tensors(
    batch: dict[str, Tensor],
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor | None, Tensor | None]:
    """The request-level inputs of a RecFlow batch, in the order DIN's and DSSM's request methods take them.

    Returns:
        ``context``, ``user``, ``seq``, ``seq_mask``, ``competing`` and ``competing_mask`` (the last two None in
        batches without competing items).
    """
    competing = batch.get("competing"), batch.get("competing_mask")
    return batch["context"], batch["user"], batch["seq"], batch["seq_mask"], *competing


def block_sizes(
    rows: int, elements_per_row: int, block_elements: int = BLOCK_ELEMENTS, device: torch.device | None = None
) -> list[int]:
    """Sizes of consecutive blocks of rows whose intermediate tensors hold about ``block_elements`` floats.

    Split the per-row tensors with ``tensor.split(sizes)``: its backward pass assembles the blocks' gradients in
    one step (slicing each block apart would allocate a full-size gradient per block).

    Args:
        rows: Number of rows.
        elements_per_row: Floats of the largest intermediate tensor per row.
        block_elements: Target size of one block's intermediate tensor on a CPU.
        device: Where the tensors are; on an accelerator a block holds at least
            :data:`ACCELERATOR_BLOCK_ELEMENTS` floats.

    Returns:
        Block sizes summing to ``rows``; one block while tracing for compile or export, or when ``rows == 0``.
    """
    if torch.compiler.is_compiling() or rows == 0:
        return [rows]
    if device is not None and device.type != "cpu":
        block_elements = max(block_elements, ACCELERATOR_BLOCK_ELEMENTS)
    step = max(1, block_elements // max(1, elements_per_row))
    return [min(step, rows - start) for start in range(0, rows, step)]


def without_padded_positions(mask: Tensor, *tensors: Tensor) -> tuple[Tensor, ...]:
    """Drop the sequence positions that are padding in every row of a block (exact; CPU only, not when traced).

    Padded positions get a softmax weight of exactly 0 in a row with at least one real position, so dropping
    them changes nothing there. A row with no real position averages all of its (padding) positions, so nothing
    is dropped from a block that holds one.

    Args:
        mask: ``True`` on real positions, ``[N, L]``.
        tensors: Tensors with the positions on axis 1, ``[N, L, ...]``.

    Returns:
        ``(mask, *tensors)``, cut to the positions real in some row.
    """
    if torch.compiler.is_compiling() or mask.device.type != "cpu":
        return (mask, *tensors)
    if not bool(mask.any(1).all()):
        return (mask, *tensors)
    real = mask.any(0).nonzero().squeeze(1)
    if len(real) == mask.shape[1]:
        return (mask, *tensors)
    first, last = int(real[0]), int(real[-1]) + 1
    if last - first == len(real):  # one run of positions (left-padded sequences): views, no copy
        return tuple(tensor[:, first:last] for tensor in (mask, *tensors))
    return tuple(tensor.index_select(1, real) for tensor in (mask, *tensors))


def length_sorted_blocks(
    mask: Tensor, elements_per_position: int, block_elements: int = BLOCK_ELEMENTS
) -> tuple[Tensor, list[int]] | None:
    """Rows ordered by their number of real positions, longest first, in blocks sized by their longest row.

    Rows of similar lengths then share a block, so that :func:`without_padded_positions` cuts most of each
    block's padding, and short rows fill larger blocks (fewer, larger operations).

    Args:
        mask: ``True`` on real positions, ``[N, L]``.
        elements_per_position: Floats of the block's intermediate tensor per row and position.
        block_elements: Target size of one block's intermediate tensor.

    Returns:
        ``(order [N], sizes)``: the row order and the block sizes in that order; None on an accelerator or while
        tracing (blocks are then :func:`block_sizes` in the given order, with every position).
    """
    if torch.compiler.is_compiling() or mask.device.type != "cpu" or len(mask) == 0:
        return None
    lengths = mask.sum(1)
    order = torch.argsort(lengths, descending=True, stable=True)
    # A row without real positions keeps all of them (see without_padded_positions).
    spans = [length or mask.shape[1] for length in lengths[order].tolist()]
    sizes, start = [], 0
    while start < len(spans):
        size = max(1, block_elements // max(1, elements_per_position * spans[start]))
        size = min(size, len(spans) - start)
        if spans[start + size - 1] == mask.shape[1] and spans[start] != mask.shape[1]:
            # Keep empty rows (full span) out of a block of shorter rows: they would widen it to every position.
            size = next(i for i in range(size) if spans[start + i] == mask.shape[1]) or size
        sizes.append(size)
        start += size
    return order, sizes
