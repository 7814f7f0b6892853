import math

import pytest
import torch

from stcrank.simulation.config import ExploreConfig, FocusConfig, WorldConfig
from stcrank.simulation.evaluation import (
    EXPLORE_METRICS,
    FOCUS_METRICS,
    Evaluation,
    evaluate_explore,
    evaluate_focus,
    expected_metric,
    paired_delta,
)
from stcrank.simulation.policies import (
    ERandomPolicy,
    RandomPolicy,
    TruthPredictor,
    ValuePolicy,
    WeightedSum,
    explore_logging_policy,
    focus_logging_policy,
)
from stcrank.simulation.world import World

FOCUS = FocusConfig(candidates=60, page_size=5, max_depth=30)


@pytest.fixture(scope="module")
def world() -> World:
    return World.build(WorldConfig(users=300, items=4000, brands=120), seed=0)


def test_paired_delta_against_hand_computed_values():
    a = torch.tensor([1.0, 2.0, 4.0, 5.0])
    b = torch.tensor([1.0, 1.0, 3.0, 3.0])
    d = paired_delta(a, b)
    diff = [0.0, 1.0, 1.0, 2.0]
    mean_diff = 1.0
    sd_diff = math.sqrt(sum((x - mean_diff) ** 2 for x in diff) / 3)
    assert d.mean_a == 3.0 and d.mean_b == 2.0 and d.delta == 1.0
    assert math.isclose(d.delta_se, sd_diff / 2)
    assert math.isclose(d.z, 1.0 / (sd_diff / 2))
    var_a = sum((x - 3) ** 2 for x in [1, 2, 4, 5]) / 3 / 4
    var_b = sum((x - 2) ** 2 for x in [1, 1, 3, 3]) / 3 / 4
    cov = sum((x - 3) * (y - 2) for x, y in zip([1, 2, 4, 5], [1, 1, 3, 3], strict=True)) / 3 / 4
    rel_var = var_a / 4 + 9 * var_b / 16 - 2 * 3 * cov / 8
    assert math.isclose(d.relative, 0.5) and math.isclose(d.relative_se, math.sqrt(rel_var))
    with pytest.raises(ValueError):
        paired_delta(a, b[:3])


def test_identical_policies_have_exactly_zero_paired_delta(world):
    policy = focus_logging_policy()
    ev = evaluate_focus(world, {"a": policy, "b": focus_logging_policy()}, sessions=300, seed=3, config=FOCUS)
    for row in ev.summary(baseline="a"):
        if row.policy == "b":
            assert row.delta == 0 and row.delta_se == 0 and row.z == 0, row.metric


def test_truth_beats_random_significantly(world):
    truth = ValuePolicy(TruthPredictor(noise=0.3), WeightedSum({"cvr": 1.0, "vtr": 0.05}))
    ev = evaluate_focus(world, {"random": RandomPolicy(), "truth": truth}, sessions=800, seed=3, config=FOCUS)
    d = ev.compare("truth", "random", "purchases")
    assert d.delta > 0 and d.z > 3
    assert ev.compare("truth", "random", "ipv").z > 3
    rows = ev.summary("random")
    assert {r.metric for r in rows} == set(FOCUS_METRICS)
    expected = ev.compare("truth", "random", "expected_purchases")
    assert expected.z > d.z  # the Rao-Blackwellised metric has the smaller paired standard error
    assert ev.sessions == 800 and ev.policies == ["random", "truth"]
    table = ev.to_markdown("random")
    assert "| truth |" in table and "purchases" in table
    depth = ev.depth_at_purchase()
    alls = [r for r in depth if r["category"] == "all"]
    assert {r["policy"] for r in alls} == {"random", "truth"}
    assert sum(r["purchases"] for r in depth if r["policy"] == "truth" and r["category"] != "all") == next(
        r["purchases"] for r in alls if r["policy"] == "truth"
    )
    breakdown = ev.category_breakdown("truth", "random")
    assert math.isclose(sum(r["share"] for r in breakdown), 1.0, rel_tol=1e-9)
    assert ev.to_dict("random")["baseline"] == "random"
    with pytest.raises(KeyError, match="unknown policy"):
        ev.summary("nope")


def test_explore_arms_share_visits(world):
    config = ExploreConfig(candidates=60, page_size=12, focus=FOCUS)
    arms = {
        "log": (explore_logging_policy(), focus_logging_policy()),
        "same": (explore_logging_policy(), focus_logging_policy()),
        "random": (ERandomPolicy(), focus_logging_policy()),
    }
    ev = evaluate_explore(world, arms, visits=600, seed=5, config=config)
    same = ev.compare("same", "log", "purchases")
    assert same.delta == 0 and same.delta_se == 0
    assert ev.compare("random", "log", "e_exposures").delta == 0  # leaving the homepage does not depend on it
    assert ev.compare("log", "random", "e_clicks").z > 3
    metrics = ev.metrics["log"]
    assert torch.allclose(metrics["purchases"], metrics["e_purchases"] + metrics["f_purchases"])
    for name in ("purchases", "ipv", "gmv", "e_exposures", "e_clicks", "e_purchases", "f_entries", "f_depth"):
        gap = metrics[name] - metrics[f"expected_{name}"]
        assert abs(float(gap.mean())) < 4 * float(gap.std()) / len(gap) ** 0.5, name
    # the homepage's closed form leaves no exit noise: E-stage exposures vary only with the user's exit propensity
    assert float(metrics["expected_e_exposures"].std()) < 0.5 * float(metrics["e_exposures"].std())


def test_expected_metric_names():
    assert expected_metric("purchases", FOCUS_METRICS) == "expected_purchases"
    assert expected_metric("depth", FOCUS_METRICS) == "expected_depth"
    assert expected_metric("return_prob", FOCUS_METRICS) == "return_prob"
    assert expected_metric("f_entries", EXPLORE_METRICS) == "expected_f_entries"


def test_evaluation_needs_policies(world):
    with pytest.raises(ValueError):
        evaluate_focus(world, {}, sessions=10)
    with pytest.raises(ValueError):
        Evaluation({}, ("a",), {}, {})


def test_explicit_starts_are_served(world):
    from stcrank.simulation.explore import sample_focus_starts

    starts = sample_focus_starts(world, 50, seed=9)
    ev = evaluate_focus(world, {"log": focus_logging_policy()}, sessions=1, config=FOCUS, starts=starts)
    assert ev.sessions == 50
