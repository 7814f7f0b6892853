"""DIN, DSSM and SASRec exported to ONNX and torch.export: outputs equal the Lightning model's on real batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from stcrank.export import standalone
from stcrank.export.formats import write_graph
from stcrank.export.recflow_graphs import din_graphs, dssm_graphs, sasrec_graphs
from stcrank.models.din import DIN
from stcrank.models.dssm import DSSM
from stcrank.models.sasrec import SASRec
from stcrank.tasks.ranking import RankingTask

pytestmark = pytest.mark.slow
TOLERANCE = 1e-5


def _task(network: type, feature_sizes: dict[str, int], **options: object) -> RankingTask:
    torch.manual_seed(0)
    return RankingTask(network=lambda sizes: network(sizes, **options), feature_sizes=feature_sizes).eval()


def _export(graphs, folder: Path) -> dict[str, dict[str, standalone.Artefact]]:
    loaded = {}
    for spec, module in graphs:
        files = write_graph(spec, module, folder)
        loaded[spec.name] = {fmt: standalone.load(files[fmt], threads=1) for fmt in ("onnx", "pt2")}
    return loaded


def _inputs(artefact: standalone.Artefact, batch: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {name: batch[name].numpy() for name in artefact.input_names}


@pytest.fixture(scope="module")
def din_artefacts(candidate_batches, tmp_path_factory):
    out = {}
    for competing in (False, True):
        sizes, _ = candidate_batches[competing]
        task = _task(DIN, sizes, competing=competing, embedding_dim=4)
        out[competing] = task, _export(din_graphs(task.network, sizes), tmp_path_factory.mktemp("din"))
    return out


@pytest.mark.parametrize("competing", [False, True])
@pytest.mark.parametrize("fmt", ["onnx", "pt2"])
def test_din_matches_the_lightning_model(din_artefacts, candidate_batches, competing, fmt):
    task, artefacts = din_artefacts[competing]
    _, batch = candidate_batches[competing]
    with torch.no_grad():
        expected = task.network.score_candidates(batch).numpy()
    artefact = artefacts["din"][fmt]
    got = artefact.run(**_inputs(artefact, batch))["logits"]
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOLERANCE)


@pytest.fixture(scope="module")
def dssm_artefacts(candidate_batches, tmp_path_factory):
    sizes, _ = candidate_batches[True]
    task = _task(DSSM, sizes, competing=True, embedding_dim=4)
    return task, _export(dssm_graphs(task.network, sizes), tmp_path_factory.mktemp("dssm"))


@pytest.mark.parametrize("fmt", ["onnx", "pt2"])
def test_dssm_towers_match_the_lightning_model(dssm_artefacts, candidate_batches, fmt):
    task, artefacts = dssm_artefacts
    _, batch = candidate_batches[True]
    network = task.network
    with torch.no_grad():
        logits = network.score_candidates(batch).numpy()
        users = network.user_vector(batch).numpy()
        items = network.item_vector(batch["candidates"].flatten(0, 1)).numpy()
    scored = artefacts["dssm"][fmt]
    np.testing.assert_allclose(scored.run(**_inputs(scored, batch))["logits"], logits, rtol=0, atol=TOLERANCE)
    user_tower = artefacts["dssm_user_tower"][fmt]
    np.testing.assert_allclose(
        user_tower.run(**_inputs(user_tower, batch))["user_vector"], users, rtol=0, atol=TOLERANCE
    )
    item_tower = artefacts["dssm_item_tower"][fmt]
    flat = batch["candidates"].flatten(0, 1).numpy()
    np.testing.assert_allclose(item_tower.run(items=flat)["item_vector"], items, rtol=0, atol=TOLERANCE)


@pytest.fixture(scope="module")
def sasrec_artefacts(recflow_store, tmp_path_factory):
    from stcrank.data.recflow.retrieval import RecFlowRetrievalDataModule
    from stcrank.tasks.retrieval import RetrievalTask

    data = RecFlowRetrievalDataModule(str(recflow_store), batch_size=16, eval_batch_size=8)
    torch.manual_seed(0)
    task = RetrievalTask(
        network=lambda sizes: SASRec(sizes, embedding_dim=8, num_blocks=2, num_heads=2),
        feature_sizes=data.feature_sizes,
    ).eval()
    artefacts = _export(sasrec_graphs(task.network, data.feature_sizes), tmp_path_factory.mktemp("sasrec"))
    return task, next(iter(data.train_dataloader())), artefacts


@pytest.mark.parametrize("fmt", ["onnx", "pt2"])
def test_sasrec_user_tower_and_item_embeddings_match_the_lightning_model(sasrec_artefacts, fmt):
    task, batch, artefacts = sasrec_artefacts
    with torch.no_grad():
        users = task.network.user_vector(batch["seq"], batch["seq_mask"]).numpy()
        items = task.network.item_vectors(batch["items"].flatten()).numpy()
        scores = task.network(batch["seq"], batch["seq_mask"], batch["items"]).numpy()
    got_users = artefacts["sasrec_user_tower"][fmt].run(seq=batch["seq"], seq_mask=batch["seq_mask"])["user_vector"]
    got_items = artefacts["sasrec_item_embeddings"][fmt].run(items=batch["items"].flatten())["item_vector"]
    np.testing.assert_allclose(got_users, users, rtol=0, atol=TOLERANCE)
    np.testing.assert_allclose(got_items, items, rtol=0, atol=TOLERANCE)
    got_scores = np.einsum("bd,bnd->bn", got_users, got_items.reshape(*batch["items"].shape, -1))
    np.testing.assert_allclose(got_scores, scores, rtol=0, atol=TOLERANCE)
