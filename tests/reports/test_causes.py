import math

import pytest

from stcrank.reports.causes import explain, findings_markdown, truth_arm, truth_comparisons
from stcrank.simulation.config import FocusConfig, WorldConfig
from stcrank.simulation.evaluation import evaluate_focus
from stcrank.simulation.policies import TruthPredictor, ValuePolicy, WeightedSum
from stcrank.simulation.world import World


def test_truth_arm_feeds_the_labels_targets():
    policy = truth_arm(WeightedSum({"cvr": 1.0, "vtr": 0.05}), None, {"vtr_threshold": 25.0, "sdr_label": "all"})
    assert policy.predictor.vtr_threshold == 25.0 and policy.predictor.sdr_label == "all"
    assert policy.predictor.noise == 0.0
    assert truth_arm(WeightedSum({"cvr": 1.0}), None, None).predictor.vtr_threshold == 5.0
    with pytest.raises(ValueError, match="unknown"):
        truth_arm(WeightedSum({"cvr": 1.0}), None, {"noise": 1.0})


def test_truth_comparisons_pair_the_truth_arms_and_measure_each_models_gap():
    world = World.build(WorldConfig(users=200, items=3000, brands=100), seed=0)
    model = TruthPredictor(noise=1.0, seed=3)  # a model with known errors
    ensembles = {"A": WeightedSum({"cvr": 1.0}), "B": WeightedSum({"cvr": 1.0, "vtr": 0.05})}
    policies = {name: ValuePolicy(model, ensemble) for name, ensemble in ensembles.items()}
    policies |= {f"truth:{name}": truth_arm(ensemble, None, None) for name, ensemble in ensembles.items()}
    evaluation = evaluate_focus(
        world, policies, sessions=1500, seed=1, config=FocusConfig(candidates=60, page_size=5, max_depth=30)
    )
    directions = [
        {"row": "B", "baseline": "A", "metric": "purchases", "expect": "up"},
        {"row": "B", "baseline": "A", "metric": "purchases", "expect": "up", "stage": "explore"},
    ]
    out = truth_comparisons(evaluation, directions)
    assert set(out) == {0}  # no truth arms for E-stage directions
    entry = out[0]
    assert entry["metric"] == "expected_purchases"
    assert entry["truth"]["relative"] == pytest.approx(
        evaluation.compare("truth:B", "truth:A", entry["metric"]).relative
    )
    assert entry["truth"]["mde"] == pytest.approx(2.8016 * entry["truth"]["relative_se"], rel=1e-3)
    # the noisy model loses purchases against its own truth
    assert entry["row_gap"]["relative"] < 0 and entry["baseline_gap"]["relative"] < 0


def _direction(verdict, relative=-0.02):
    return {
        "row": "B",
        "baseline": "A",
        "claim": "B: purchase up",
        "expect": "up",
        "verdict": verdict,
        "relative": relative,
        "relative_se": 0.005,
    }


def _truth(relative, se, p):
    gap = {"relative": -0.1, "relative_se": 0.01}
    return {
        "metric": "expected_purchases",
        "truth": {"relative": relative, "relative_se": se, "mde": 2.8 * se, "p_value": p},
        "row_gap": gap,
        "baseline_gap": gap,
    }


def test_explain_tells_a_model_property_from_a_simulator_property():
    model = explain(_direction("reversed"), _truth(0.03, 0.005, 1e-6))
    assert "property of the trained models" in model and "+3.00% ± 0.50" in model
    simulator = explain(_direction("reversed"), _truth(-0.03, 0.005, 1e-6))
    assert "simulator's behaviour model" in simulator and "against the paper" in simulator
    nothing = explain(_direction("no effect larger than the MDE", 0.0), _truth(0.001, 0.005, 0.8))
    assert "no effect larger than 1.40%" in nothing and "property of the simulator" in nothing
    assert explain(_direction("holds", 0.05), _truth(0.03, 0.005, 1e-6)) == ""
    assert explain(_direction("underpowered", 0.0), _truth(0.03, 0.005, 1e-6)) == ""
    assert "not analysed" in explain(_direction("reversed"), None)
    text = findings_markdown([_direction("reversed"), _direction("underpowered")], {0: _truth(0.03, 0.005, 1e-6)})
    assert "1 reversed" in text and "1 underpowered" in text and "Underpowered (MDE above" in text
    assert not math.isnan(_truth(0.0, 0.1, 0.5)["truth"]["mde"])
