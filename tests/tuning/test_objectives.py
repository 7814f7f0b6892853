import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchmetrics.functional.classification import binary_auroc

from stcrank.registry import PluginError
from stcrank.tuning.objectives import (
    MultiAucObjective,
    Objective,
    SumAucObjective,
    TuningContext,
    binary_auc,
    build_ensemble,
    check_objective,
    resolve_objective,
)
from stcrank.tuning.predictions import read_predictions, synthetic_predictions, write_predictions


def _pairwise_auc(scores, labels):
    positives = [s for s, y in zip(scores, labels, strict=True) if y]
    negatives = [s for s, y in zip(scores, labels, strict=True) if not y]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(positives, negatives))
    return wins / (len(positives) * len(negatives))


def test_auc_hand_examples():
    assert binary_auc(torch.tensor([0.1, 0.4, 0.35, 0.8]), torch.tensor([0, 0, 1, 1])) == pytest.approx(0.75)
    # positives {0.5, 0.9}, negatives {0.5, 0.2}: 0.5 (tie) + 1 + 1 + 1 over 4 pairs
    assert binary_auc(torch.tensor([0.5, 0.5, 0.2, 0.9]), torch.tensor([True, False, False, True])) == 0.875
    assert binary_auc(np.zeros(5), np.array([1, 0, 1, 0, 0])) == 0.5
    assert binary_auc(torch.tensor([3.0, 2.0, 1.0]), torch.tensor([0, 1, 1])) == 0.0


def test_auc_matches_torchmetrics_with_and_without_ties():
    generator = torch.Generator().manual_seed(0)
    scores = torch.rand(5000, generator=generator)
    labels = torch.rand(5000, generator=generator) < scores
    for values in (scores, (scores * 20).round() / 20):
        expected = float(binary_auroc(values, labels.long()))
        assert binary_auc(values, labels) == pytest.approx(expected, abs=1e-6)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.booleans()), min_size=2, max_size=40))
def test_auc_equals_pairwise_count(rows):
    scores = [float(score) for score, _ in rows]
    labels = [label for _, label in rows]
    if all(labels) or not any(labels):
        with pytest.raises(ValueError, match="needs positives and negatives"):
            binary_auc(np.array(scores), np.array(labels))
        return
    assert binary_auc(np.array(scores), np.array(labels)) == pytest.approx(_pairwise_auc(scores, labels), abs=1e-12)


def test_auc_rejects_bad_input():
    with pytest.raises(ValueError, match="NaN"):
        binary_auc(torch.tensor([0.1, float("nan")]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="1-D of one length"):
        binary_auc(torch.zeros(3), torch.zeros(2))


@pytest.fixture(scope="module")
def cached(tmp_path_factory):
    path = tmp_path_factory.mktemp("objectives") / "val.parquet"
    return read_predictions(synthetic_predictions(path, rows=3000, seed=1))


def _context(cached, ensemble="linear"):
    return TuningContext(tasks=("vtr", "cvr", "sdr"), ensemble=ensemble, predictions=cached)


@pytest.mark.parametrize("ensemble", ["linear", "multiplicative"])
def test_sum_auc_equals_aucs_computed_directly(cached, ensemble):
    objective = SumAucObjective()
    objective.setup(_context(cached, ensemble))
    weights = {"vtr": 1.0, "cvr": 3.0, "sdr": 0.5}
    result = objective.evaluate(weights)
    value = build_ensemble(ensemble, weights)(cached.predictions)
    for task in ("vtr", "cvr", "sdr"):
        mask = cached.masks[task]
        assert result[f"auc_{task}"] == pytest.approx(binary_auc(value[mask], cached.labels[task][mask]), abs=1e-12)
    assert result["sum_auc"] == pytest.approx(sum(result[f"auc_{task}"] for task in ("vtr", "cvr", "sdr")))
    assert objective.names == ("sum_auc",) and objective.directions == ("maximize",)


def test_weights_change_the_aucs_and_scale_does_not(cached):
    objective = MultiAucObjective()
    objective.setup(_context(cached))
    assert objective.names == ("auc_vtr", "auc_cvr", "auc_sdr") and objective.directions == ("maximize",) * 3
    base = objective.evaluate({"vtr": 1.0, "cvr": 2.0, "sdr": 0.5})
    scaled = objective.evaluate({"vtr": 10.0, "cvr": 20.0, "sdr": 5.0})
    assert scaled == pytest.approx(base, abs=1e-12)
    cvr_heavy = objective.evaluate({"vtr": 1.0, "cvr": 1000.0, "sdr": 1e-3})
    assert cvr_heavy["auc_cvr"] > base["auc_cvr"] and cvr_heavy["auc_vtr"] < base["auc_vtr"]


def test_a_task_without_negatives_is_named(tmp_path):
    predictions = {"cvr": torch.tensor([0.1, 0.2, 0.3]), "vtr": torch.tensor([0.3, 0.2, 0.1])}
    labels = {"cvr": torch.tensor([1, 1, 0]), "vtr": torch.tensor([1, 1, 0])}
    masks = {"cvr": torch.ones(3, dtype=torch.bool), "vtr": torch.tensor([True, True, False])}
    path = write_predictions(tmp_path / "v.parquet", predictions, labels, masks)
    objective = SumAucObjective()
    context = TuningContext(tasks=("cvr", "vtr"), ensemble="linear", predictions=read_predictions(path))
    with pytest.raises(ValueError, match=r"v.parquet: task 'vtr': mask_vtr selects 2 positive\(s\) and 0 negative"):
        objective.setup(context)


def test_setup_needs_predictions_of_every_task(cached):
    with pytest.raises(ValueError, match="needs cached predictions"):
        SumAucObjective().setup(TuningContext(tasks=("vtr", "cvr"), ensemble="linear"))
    with pytest.raises(ValueError, match=r"no predictions for task\(s\) \['ctr'\]"):
        SumAucObjective().setup(TuningContext(tasks=("vtr", "ctr"), ensemble="linear", predictions=cached))


def test_resolution_and_checks():
    assert isinstance(resolve_objective("multi_auc"), MultiAucObjective)
    custom = SumAucObjective()
    assert resolve_objective(custom) is custom
    with pytest.raises(ValueError, match="unknown objective 'auc'; built-in objectives: sum_auc, multi_auc"):
        resolve_objective("auc")
    with pytest.raises(PluginError, match="unknown plugin 'nope'"):
        build_ensemble("nope", {"vtr": 1.0})

    class Broken(Objective):
        names = ("a", "a")
        directions = ("maximize", "maximize")

        def evaluate(self, weights):
            return {"a": 0.0}

    with pytest.raises(ValueError, match="distinct values"):
        check_objective(Broken())
    with pytest.raises(ValueError, match="one of \\('maximize', 'minimize'\\) per name"):
        check_objective(_Directions(("up",)))


class _Directions(Objective):
    def __init__(self, directions):
        self._directions = directions

    @property
    def names(self):
        return ("x",)

    @property
    def directions(self):
        return self._directions

    def evaluate(self, weights):
        return {"x": 0.0}
