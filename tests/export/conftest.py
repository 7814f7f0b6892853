"""Fixtures of the export tests: real RecFlow candidate batches (with and without competing items), one thread."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """One intra-op thread: small kernels on a shared machine run far faster so."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def candidate_batches(recflow_store: Path) -> dict[bool, tuple[dict[str, int], dict[str, torch.Tensor]]]:
    """``competing -> (feature_sizes, batch)``: a test batch of requests with their stage candidates."""
    from stcrank.data.recflow.ranking_data import RecFlowRankingDataModule

    out = {}
    for competing in (False, True):
        options = {"competing_stage": "rank_pos"} if competing else {}
        data = RecFlowRankingDataModule(str(recflow_store), batch_size=16, eval_batch_size=8, **options)
        _, candidates = data.test_dataloader()
        out[competing] = (data.feature_sizes, next(iter(candidates)))
    return out
