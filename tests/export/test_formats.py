"""The writers: format choice, the AOTInductor package, and the schema each file carries."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from stcrank.export import standalone
from stcrank.export.formats import ExportError, write_graph
from stcrank.export.rerank_graphs import reranker_graph
from stcrank_plugins.rerankers.greedy import GreedyReranker


def test_an_unknown_format_is_named(tmp_path):
    with pytest.raises(ExportError, match="--formats onnx tflite: choose among onnx, pt2, aoti"):
        write_graph(*reranker_graph(GreedyReranker(), 2), tmp_path, ("onnx", "tflite"))


@pytest.mark.slow
def test_aoti_package_serves_the_plugins_lists_and_schema_travels_in_each_file(tmp_path):
    files = write_graph(*reranker_graph(GreedyReranker(), 3), tmp_path, ("aoti", "onnx", "pt2"))
    assert files["aoti"].name == "greedy.aoti.pt2"
    value, continue_prob = torch.rand(5, 9), torch.rand(5, 9)
    artefact = standalone.load(files["aoti"], threads=1)
    assert artefact.runtime == "aoti" and artefact.schema["metadata"] == {"k": 3, "reranker": "greedy"}
    order = artefact.run(value=value.numpy(), continue_prob=continue_prob.numpy())["order"]
    np.testing.assert_array_equal(order, GreedyReranker()(value, continue_prob, 3).numpy())
    sidecar = json.loads(files["schema"].read_text())
    files["schema"].unlink()  # without the sidecar, the schema comes from the file itself
    for fmt in ("onnx", "pt2"):
        assert standalone.read_schema(files[fmt]) == sidecar
