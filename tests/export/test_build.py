"""What ``stcrank export`` picks for each task, and its one-line errors (no tracing here)."""

from __future__ import annotations

import pytest
import torch

from stcrank.export.build import build_reranker, read_ensemble, task_graphs
from stcrank.export.formats import ExportError
from stcrank.export.pipeline_graph import pipeline_graph
from stcrank.models.din import DIN
from stcrank.models.dssm import DSSM
from stcrank.models.esmm import ESMM
from stcrank.models.features import CONTEXT_FEATURES, ITEM_FEATURES, USER_FEATURES
from stcrank.models.mmoe import MMoE
from stcrank.models.sasrec import SASRec
from stcrank.tasks.esmm import ESMMTask
from stcrank.tasks.multitask import MultiTaskRankingTask
from stcrank.tasks.ranking import RankingTask
from stcrank.tasks.retrieval import RetrievalTask
from stcrank_plugins.ensembles.linear import LinearEnsemble
from stcrank_plugins.ensembles.multiplicative import MultiplicativeEnsemble
from stcrank_plugins.rerankers.exact import ExactReranker

RECFLOW_SIZES = dict.fromkeys(CONTEXT_FEATURES + USER_FEATURES + ITEM_FEATURES, 9)
ESHOP_SIZES = {"user_id": 9, "user_segment": 4, "item_id": 9, "item_category": 5, "trigger_category": 5}


@pytest.mark.parametrize(
    ("task", "names"),
    [
        (lambda: RankingTask(network=DIN, feature_sizes=RECFLOW_SIZES), ["din"]),
        (
            lambda: RankingTask(network=DSSM, feature_sizes=RECFLOW_SIZES),
            ["dssm_user_tower", "dssm_item_tower", "dssm"],
        ),
        (
            lambda: RetrievalTask(network=SASRec, feature_sizes=RECFLOW_SIZES),
            ["sasrec_user_tower", "sasrec_item_embeddings"],
        ),
        (lambda: MultiTaskRankingTask(network=MMoE, feature_sizes=ESHOP_SIZES), ["mmoe"]),
        (
            lambda: ESMMTask(network=lambda sizes: ESMM(sizes, categorical=["user_id"]), feature_sizes=ESHOP_SIZES),
            ["esmm"],
        ),
    ],
)
def test_every_network_has_its_graphs(task, names):
    graphs = task_graphs(task())
    assert [spec.name for spec, _ in graphs] == names
    for spec, _ in graphs:
        assert spec.schema()["metadata"]["feature_sizes"]


def test_another_network_is_refused():
    class Task(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.hparams = {"feature_sizes": {"a": 2}}
            self.network = torch.nn.Linear(2, 2)

    with pytest.raises(ExportError, match="network Linear cannot be exported; exportable: DIN"):
        task_graphs(Task())


def test_read_ensemble_takes_the_tune_file_inline_yaml_and_weights(tmp_path):
    from stcrank.tuning.report import yaml_snippet

    path = tmp_path / "ensemble.yaml"
    path.write_text(yaml_snippet("multiplicative", {"cvr": 1.0, "sdr": 2.0}))
    ensemble, spec = read_ensemble(str(path))
    assert isinstance(ensemble, MultiplicativeEnsemble) and ensemble.weights == {"cvr": 1.0, "sdr": 2.0}
    assert spec["init_args"]["weights"] == {"cvr": 1.0, "sdr": 2.0}
    ensemble, _ = read_ensemble("{name: linear, init_args: {weights: {cvr: 1}}}")
    assert isinstance(ensemble, LinearEnsemble)
    ensemble, _ = read_ensemble("{cvr: 1, vtr: 0.1}")
    assert ensemble({"cvr": torch.ones(1), "vtr": torch.ones(1)}).item() == pytest.approx(1.1)


@pytest.mark.parametrize(
    ("text", "message"),
    [("[1, 2]", "expected a file or YAML mapping"), ("{a: [", "not YAML"), ("{name: nope}", "--ensemble")],
)
def test_read_ensemble_names_the_option(text, message):
    with pytest.raises(ExportError, match=message):
        read_ensemble(text)


def test_pipeline_refuses_predictions_the_network_does_not_make():
    network = MMoE(ESHOP_SIZES, tasks=["cvr", "vtr"])
    with pytest.raises(ExportError, match="--continue_task sdr: the network predicts cvr, vtr"):
        pipeline_graph(network, ESHOP_SIZES, LinearEnsemble({"cvr": 1.0}), ExactReranker(), 3, "sdr")
    with pytest.raises(ExportError, match=r"--ensemble: it weighs \['sdr'\]"):
        pipeline_graph(network, ESHOP_SIZES, LinearEnsemble({"sdr": 1.0}), ExactReranker(), 3, "vtr")


def test_unknown_reranker_is_named():
    with pytest.raises(ExportError, match="--reranker top: choose among greedy, exact, beam_search"):
        build_reranker("top", 5)
    assert build_reranker("beam_search", 7).beam_size == 7
