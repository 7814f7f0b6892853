"""Exported re-rankers return the plugins' lists; the exported exact reaches the brute-force optimum."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stcrank.export import standalone
from stcrank.export.formats import ExportError, write_graph
from stcrank.export.rerank_graphs import BeamSearchGraph, ExactGraph, GreedyGraph, reranker_graph
from stcrank.rerank import brute_force_rerank, random_instances, sequence_value
from stcrank_plugins.rerankers.beam_search import BeamSearchReranker
from stcrank_plugins.rerankers.exact import ExactReranker
from stcrank_plugins.rerankers.greedy import GreedyReranker

K = 3
BEAM = 2
PROPS = settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
VALUES = st.one_of(st.sampled_from([0.0, 0.0, 1.0, 0.5, -0.5, 2.0]), st.floats(-3, 3, width=32))
CONTINUE = st.one_of(st.sampled_from([0.0, 1.0, 0.5]), st.floats(0, 1, width=32))


def _plugins() -> dict[str, object]:
    return {"greedy": GreedyReranker(), "exact": ExactReranker(), "beam_search": BeamSearchReranker(BEAM)}


@pytest.mark.parametrize(("n", "k"), [(3, 3), (7, 2), (40, 10), (800, 10)])
def test_graph_modules_return_the_plugins_lists(n, k):
    value, continue_prob = random_instances(32, n, torch.Generator().manual_seed(n), negative=True)
    value, continue_prob = value.float(), continue_prob.float()
    graphs = {"greedy": GreedyGraph(k), "exact": ExactGraph(k), "beam_search": BeamSearchGraph(k, BEAM)}
    for name, plugin in _plugins().items():
        assert torch.equal(graphs[name](value, continue_prob), plugin(value, continue_prob, k)), name


def test_exact_graph_equals_the_unpruned_plugin_on_large_batches():
    value, continue_prob = random_instances(256, 300, torch.Generator().manual_seed(1), negative=True)
    value, continue_prob = value.float(), continue_prob.float()
    expected = ExactReranker(prune=False)(value, continue_prob, 25)
    assert torch.equal(ExactGraph(25)(value, continue_prob), expected)


def test_unsupported_rerankers_are_refused():
    with pytest.raises(ExportError, match="prefix_scorer: pointwise"):
        reranker_graph(BeamSearchReranker(2, prefix_scorer="category_diversity"), K)
    with pytest.raises(ExportError, match="choose greedy, exact or beam_search"):
        reranker_graph(object(), K)
    with pytest.raises(ExportError, match="--k 0"):
        reranker_graph(GreedyReranker(), 0)


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, dict[str, standalone.Artefact]]:
    folder = tmp_path_factory.mktemp("rerankers")
    out = {}
    for name, plugin in _plugins().items():
        files = write_graph(*reranker_graph(plugin, K), folder)
        out[name] = {fmt: standalone.load(files[fmt], threads=1) for fmt in ("onnx", "pt2")}
    return out


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "pt2"])
@pytest.mark.parametrize("n", [3, 6, 120])
def test_exported_rerankers_return_the_plugins_lists(exported, fmt, n):
    value, continue_prob = random_instances(40, n, torch.Generator().manual_seed(n), negative=True)
    value, continue_prob = value.float(), continue_prob.float()
    for name, plugin in _plugins().items():
        order = exported[name][fmt].run(value=value.numpy(), continue_prob=continue_prob.numpy())["order"]
        assert order.dtype == np.int64
        np.testing.assert_array_equal(order, plugin(value, continue_prob, K).numpy(), err_msg=name)


@st.composite
def instances(draw):
    rows, n = draw(st.integers(1, 4)), draw(st.integers(K, 7))
    value = draw(st.lists(VALUES, min_size=rows * n, max_size=rows * n))
    continue_prob = draw(st.lists(CONTINUE, min_size=rows * n, max_size=rows * n))
    return (
        torch.tensor(value, dtype=torch.float32).reshape(rows, n),
        torch.tensor(continue_prob, dtype=torch.float32).reshape(rows, n),
    )


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "pt2"])
def test_exported_exact_reaches_the_brute_force_optimum(exported, fmt):
    @PROPS
    @given(instances())
    def check(instance):
        value, continue_prob = instance
        order = exported["exact"][fmt].run(value=value.numpy(), continue_prob=continue_prob.numpy())["order"]
        order = torch.from_numpy(order)
        assert all(len(set(row)) == K for row in order.tolist())
        best = brute_force_rerank(value.double(), continue_prob.double(), K).value
        got = sequence_value(value.double(), continue_prob.double(), order)
        torch.testing.assert_close(got, best, rtol=0, atol=1e-5)

    check()


@pytest.mark.slow
def test_exported_reranker_rejects_bad_inputs(exported):
    artefact = exported["exact"]["onnx"]
    value = np.zeros((2, 5), dtype=np.float32)
    with pytest.raises(standalone.ServingInputError, match=r"'continue_prob'.*must lie in \[0.0, 1.0\]"):
        artefact.run(value=value, continue_prob=value + 2)
    with pytest.raises(standalone.ServingInputError, match=r"'value': expected float32.*got dtype float64"):
        artefact.run(value=value.astype(np.float64), continue_prob=value)
    with pytest.raises(standalone.ServingInputError, match=r"candidates = 2 is outside \[3, 8192\]"):
        artefact.run(value=value[:, :2], continue_prob=value[:, :2])
