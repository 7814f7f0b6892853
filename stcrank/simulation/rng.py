"""Counter-based random numbers: every draw is a hash of (seed, keys), not the state of a generator.

A draw keyed by (run seed, session key, depth, stream) is the same whatever the batch it is computed in and
whatever policy serves the session, which is what common random numbers need: two policies that show
different items at depth 3 of session 17 still share the watch-time, purchase and exit uniforms of that
slot. The hash is MurmurHash3's 32-bit finaliser chained over the keys, computed on ``int64`` tensors whose
values stay below 2**32 (products may wrap, but the low 32 bits, the only ones kept, are exact).
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

_MASK32 = 0xFFFFFFFF
_GOLDEN = 0x9E3779B9


def _fmix32(h: Tensor) -> Tensor:
    h = h ^ (h >> 16)
    h = (h * 0x85EBCA6B) & _MASK32
    h = h ^ (h >> 13)
    h = (h * 0xC2B2AE35) & _MASK32
    return h ^ (h >> 16)


def _combine(h: Tensor, key: Tensor) -> Tensor:
    k = _fmix32(key ^ _GOLDEN)
    return _fmix32((h ^ (k + _GOLDEN + ((h << 6) & _MASK32) + (h >> 2))) & _MASK32)


def hash32(seed: int, *keys: Tensor | int) -> Tensor:
    """Hash a seed and broadcastable integer keys to 32-bit values.

    Keys are folded in order with broadcasting, so scalar keys placed first cost nothing per element.

    Args:
        seed: The run seed (any non-negative Python int).
        *keys: Integer tensors (or ints) with values in ``[0, 2**32)``, broadcast together.

    Returns:
        ``int64`` tensor of values in ``[0, 2**32)`` with the broadcast shape of the keys.

    Raises:
        ValueError: If a key is outside ``[0, 2**32)``.
    """
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    h = _fmix32(torch.tensor(seed & _MASK32, dtype=torch.int64))
    h = _combine(h, torch.tensor((seed >> 32) & _MASK32, dtype=torch.int64))
    for key in keys:
        t = torch.as_tensor(key, dtype=torch.int64)
        if t.numel() and (int(t.min()) < 0 or int(t.max()) > _MASK32):
            raise ValueError(f"hash keys must lie in [0, 2**32); got values in [{int(t.min())}, {int(t.max())}]")
        h = _combine(h, t)
    return h


@functools.lru_cache(maxsize=1024)
def _column_table(seed: int, domain: int, size: int) -> Tensor:
    return hash32(seed, domain, 0x2C1B3C6D, torch.arange(size))


def pair_hash(seed: int, rows: tuple[Tensor | int, ...], cols: Tensor, n_cols: int) -> Tensor:
    """Hash of (row keys, column index) pairs for large ``[R, n]`` grids, at one mixing round per element.

    The row keys are hashed once per row and the columns once per possible value (a cached table of
    ``n_cols`` entries); each grid element then costs one finaliser of their XOR. Used for per-(session,
    candidate) and per-(user, item) draws over whole candidate lists.

    Args:
        seed: The run seed.
        rows: Row keys (tensors broadcastable to ``[R, 1]``, or ints); the first is usually a domain constant.
        cols: Column indices in ``[0, n_cols)`` (item indices), e.g. ``[R, n]``.
        n_cols: Size of the column universe (number of items).

    Returns:
        ``int64`` tensor of 32-bit hashes with the broadcast shape.
    """
    row = hash32(seed, *rows)
    table = _column_table(seed, int(hash32(seed, *[r for r in rows if isinstance(r, int)])), n_cols)
    return _fmix32(row ^ table[cols])


def _to_uniform(h: Tensor) -> Tensor:
    return ((h >> 9).to(torch.float32) + 0.5) / float(1 << 23)


def pair_uniform(seed: int, rows: tuple[Tensor | int, ...], cols: Tensor, n_cols: int) -> Tensor:
    """Uniforms in (0, 1) of (row keys, column index) pairs (see :func:`pair_hash`).

    Args:
        seed: The run seed.
        rows: Row keys (broadcastable tensors or ints).
        cols: Column indices in ``[0, n_cols)``.
        n_cols: Size of the column universe.

    Returns:
        ``float32`` uniforms with the broadcast shape.
    """
    return _to_uniform(pair_hash(seed, rows, cols, n_cols))


def uniform(seed: int, *keys: Tensor | int) -> Tensor:
    """Uniform draws in the open interval (0, 1), one per broadcast key.

    23 bits of the hash are used so that every value, and ``1 - value``, is exact in ``float32`` and never
    0 or 1 (inverse CDFs stay finite).

    Args:
        seed: The run seed.
        *keys: Non-negative integer keys (session, depth, stream...), broadcast together.

    Returns:
        ``float32`` tensor of uniforms.
    """
    return _to_uniform(hash32(seed, *keys))


def normal(seed: int, *keys: Tensor | int) -> Tensor:
    """Standard normal draws by the inverse CDF of :func:`uniform`.

    Args:
        seed: The run seed.
        *keys: Non-negative integer keys, broadcast together.

    Returns:
        ``float32`` tensor of N(0, 1) draws.
    """
    return torch.special.ndtri(uniform(seed, *keys))


def gumbel(seed: int, *keys: Tensor | int) -> Tensor:
    """Standard Gumbel draws (``-log(-log U)``), used for Plackett-Luce sampling without replacement.

    Args:
        seed: The run seed.
        *keys: Non-negative integer keys, broadcast together.

    Returns:
        ``float32`` tensor of Gumbel(0, 1) draws.
    """
    return -torch.log(-torch.log(uniform(seed, *keys)))
