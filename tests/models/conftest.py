"""Fixtures of the network tests: the per-row reference forward passes (``reference_networks.py``), one thread."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import torch


@pytest.fixture(scope="session")
def reference_networks() -> ModuleType:
    """The networks' forward passes as they were before the per-request split (tests import mode is importlib)."""
    path = Path(__file__).with_name("reference_networks.py")
    spec = importlib.util.spec_from_file_location("reference_networks", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Run the network tests on one intra-op thread: small kernels on a shared machine run far faster so."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def real_batches(recflow_store: Path) -> dict[bool, tuple[dict[str, int], dict[str, dict[str, torch.Tensor]]]]:
    """``competing -> (feature_sizes, {kind: batch})``: a batch of every training kind and of both test loaders.

    Training batches hold 200 exposures of fewer requests (``request_slot``); request lists 16 requests.
    """
    return {competing: _real_batches(recflow_store, competing) for competing in (False, True)}


def _real_batches(store: Path, competing: bool) -> tuple[dict[str, int], dict[str, dict[str, torch.Tensor]]]:
    from stcrank.data.recflow.ranking_data import RecFlowRankingDataModule
    from stcrank_plugins.negative_samplers.extra import StageExtraNegativeSampler

    options = {"competing_stage": "rank_pos"} if competing else {}
    kinds = {
        "exposures": {},
        "extra_negatives": {"negative_sampler": StageExtraNegativeSampler(["rank_neg"], 2)},
        "aux_exposures": {},
        "request_lists": {},
    }
    batches = {}
    for kind, extra in kinds.items():
        size = 16 if kind == "request_lists" else 200
        data = RecFlowRankingDataModule(
            str(store), batch_size=size, eval_batch_size=8, sample_kind=kind, **options, **extra
        )
        batches[kind] = next(iter(data.train_dataloader()))
    exposures, candidates = data.test_dataloader()
    batches["test_exposures"] = next(iter(exposures))
    batches["test_candidates"] = next(iter(candidates))
    return data.feature_sizes, batches
