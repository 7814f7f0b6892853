"""The standalone loader's input checks: every mismatch is one clear error naming the input."""

from __future__ import annotations

import numpy as np
import pytest

from stcrank.export.schema import DimSpec, GraphSpec, TensorSpec
from stcrank.export.standalone import ServingInputError, check_inputs


@pytest.fixture
def schema() -> dict:
    spec = GraphSpec(
        name="toy",
        kind="network",
        inputs=[
            TensorSpec("ids", "int64", ("requests", "candidates", 2), columns=("a", "b"), id_sizes=(5, None)),
            TensorSpec("mask", "bool", ("requests", "candidates")),
            TensorSpec("prob", "float32", ("requests", "candidates"), range=(0.0, 1.0)),
        ],
        outputs=[TensorSpec("out", "float32", ("requests", "candidates"))],
        dims={"requests": DimSpec("requests"), "candidates": DimSpec("candidates", min=2, max=10)},
    )
    return spec.schema()


def _good() -> dict[str, np.ndarray]:
    return {
        "ids": np.array([[[1, 7], [4, 0], [0, 0]]], dtype=np.int64),
        "mask": np.array([[True, True, False]]),
        "prob": np.array([[0.5, 1.0, 0.0]], dtype=np.float32),
    }


def test_valid_inputs_give_the_dimension_sizes(schema):
    assert check_inputs(schema, _good()) == {"requests": 1, "candidates": 3}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda x: x.pop("mask"), "missing \\['mask'\\]"),
        (lambda x: x.update(extra=np.zeros(1)), "unknown \\['extra'\\]"),
        (lambda x: x.update(ids=x["ids"].astype(np.int32)), "input 'ids': expected int64.*got dtype int32"),
        (lambda x: x.update(mask=x["mask"][0]), "input 'mask'.*1 dimensions"),
        (lambda x: x.update(ids=x["ids"][..., :1]), "axis 2 must be 2"),
        (lambda x: x.update(mask=x["mask"][:, :2]), "candidates is 2 here but 3 in input 'ids'"),
        (lambda x: x.update(ids=x["ids"] + 4), "input 'ids', a .*ids in \\[4, 8\\].*5 rows"),
        (lambda x: x.update(prob=x["prob"] * 2), "input 'prob': values in \\[0.0, 2.0\\].*\\[0.0, 1.0\\]"),
        (lambda x: x.update(prob=x["prob"] * np.nan), "input 'prob': holds NaN"),
    ],
)
def test_a_wrong_input_is_named(schema, change, message):
    inputs = _good()
    change(inputs)
    with pytest.raises(ServingInputError, match=message):
        check_inputs(schema, inputs)


def test_a_dimension_outside_its_range_is_named(schema):
    inputs = {name: np.repeat(array, 4, axis=1) for name, array in _good().items()}
    with pytest.raises(ServingInputError, match="candidates = 12 is outside \\[2, 10\\]"):
        check_inputs(schema, inputs)
