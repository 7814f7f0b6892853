"""MMoE and ESMM exported to ONNX and torch.export: the task's served probabilities on real e-shop batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from stcrank.export import standalone
from stcrank.export.formats import write_graph
from stcrank.export.multitask_graphs import column_layout, multitask_graph
from stcrank.models.esmm import ESMM
from stcrank.models.mmoe import MMoE
from stcrank.tasks.esmm import ESMMTask
from stcrank.tasks.multitask import MultiTaskRankingTask

pytestmark = pytest.mark.slow
TOLERANCE = 1e-5


def _batch(data) -> dict[str, torch.Tensor]:
    data.setup("fit")
    return next(iter(data.val_dataloader()))


@pytest.fixture(scope="module")
def exported(eshop_store: Path, tmp_path_factory) -> dict[str, tuple]:
    from stcrank.data.eshop.datamodule import EShopDataModule
    from stcrank.data.eshop.explore_datamodule import EShopExploreDataModule

    torch.manual_seed(0)
    f_data = EShopDataModule(str(eshop_store), labels={"cvr": "cvr", "sdr": "sdr"}, eval_batch_size=64)
    mmoe = MultiTaskRankingTask(
        network=lambda sizes: MMoE(sizes, tasks=["cvr", "sdr"], embedding_dim=4, expert_hidden=[16, 8]),
        feature_sizes=f_data.feature_sizes,
    ).eval()
    e_data = EShopExploreDataModule(str(eshop_store), eval_batch_size=64)
    esmm = ESMMTask(
        network=lambda sizes: ESMM(sizes, embedding_dim=4, expert_hidden=[16, 8]), feature_sizes=e_data.feature_sizes
    ).eval()
    out = {}
    for name, task, data in (("mmoe", mmoe, f_data), ("esmm", esmm, e_data)):
        spec, module = multitask_graph(task.network, data.feature_sizes)
        files = write_graph(spec, module, tmp_path_factory.mktemp(name))
        artefacts = {fmt: standalone.load(files[fmt], threads=1) for fmt in ("onnx", "pt2")}
        out[name] = (task, _batch(data), artefacts)
    return out


def _flat(network, batch: dict[str, torch.Tensor], requests: torch.Tensor, candidates: torch.Tensor):
    """The graph's inputs and the task's batch: request-level columns of rows ``requests`` ``[R]``, candidate
    columns of rows ``candidates`` ``[R, n]``."""
    request_names, candidate_names = column_layout(network)
    inputs = {
        "request_features": torch.stack([batch[n][requests] for n in request_names], dim=-1),
        "candidate_features": torch.stack([batch[n][candidates] for n in candidate_names], dim=-1),
        "item_price": batch["item_price"][candidates].float(),
    }
    columns = {n: batch[n][requests].unsqueeze(1) for n in request_names}
    columns.update({n: batch[n][candidates] for n in candidate_names})
    columns["item_price"] = batch["item_price"][candidates]
    return {k: v.numpy() for k, v in inputs.items()}, columns


@pytest.mark.parametrize("name", ["mmoe", "esmm"])
@pytest.mark.parametrize("fmt", ["onnx", "pt2"])
@pytest.mark.parametrize("layout", ["rows", "requests"])
def test_probabilities_match_the_lightning_model(exported, name, fmt, layout):
    task, batch, artefacts = exported[name]
    rows = len(batch["item_price"])
    if layout == "rows":  # one candidate per request: the data module's own rows
        requests, candidates = torch.arange(rows), torch.arange(rows).unsqueeze(1)
    else:  # 4 requests of 9 candidates: request-level work shared across a request's candidates
        requests = torch.arange(4)
        candidates = torch.randperm(rows, generator=torch.Generator().manual_seed(0))[:36].view(4, 9)
    inputs, columns = _flat(task.network, batch, requests, candidates)
    with torch.no_grad():
        expected = task.predict_probabilities(columns)
    artefact = artefacts[fmt]
    got = artefact.run(**inputs)["probabilities"]
    names = artefact.schema["metadata"]["outputs"]
    assert list(names) == list(expected)
    for position, output in enumerate(names):
        want = expected[output].expand(candidates.shape).numpy()
        np.testing.assert_allclose(got[..., position], want, rtol=0, atol=TOLERANCE, err_msg=output)
