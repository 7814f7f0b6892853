"""Intra-op threads of the re-rankers' kernels.

Re-ranking runs many small kernels per batch (one per list position and per beam step). With several intra-op
threads, every kernel ends at a barrier that waits for its slowest thread; when another process holds one of the
cores, that thread is often descheduled and each kernel waits for it, so that throughput collapses (on two cores
with one busy, the exact re-ranker fell from about 52,000 to 2,300 requests per second with two threads). One
thread per re-ranking call keeps nearly all of its speed whatever else runs, so the built-in re-rankers use one by
default (their ``threads`` option).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

RERANK_THREADS = 1
"""Default intra-op threads of a re-ranking call."""


@contextlib.contextmanager
def intra_op_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``threads`` torch intra-op threads, then restore the process's setting.

    Args:
        threads: Threads for the block; None keeps the process's setting (``torch.get_num_threads()``).

    Raises:
        ValueError: If ``threads`` is below 1.
    """
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1 or None, got {threads}")
    previous = torch.get_num_threads()
    if threads is None or threads == previous:
        yield
        return
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
