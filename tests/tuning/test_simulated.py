import pytest

from stcrank.tuning.objectives import TuningContext
from stcrank.tuning.simulated import SimulatedOutcomes


def test_simulated_objective_is_deterministic_and_sensitive_to_weights(eshop_store):
    objective = SimulatedOutcomes(str(eshop_store), predictor={"truth": {"noise": 0.3}}, sessions=300, seed=2)
    objective.setup(TuningContext(tasks=("cvr", "vtr"), ensemble="linear", predictions=None))
    assert objective.names == ("purchases", "ipv", "depth") and objective.directions == ("maximize",) * 3
    a = objective.evaluate({"cvr": 1.0, "vtr": 0.01})
    assert a == objective.evaluate({"cvr": 1.0, "vtr": 0.01})  # common random numbers
    b = objective.evaluate({"cvr": 1.0, "vtr": 100.0})
    assert b["ipv"] > a["ipv"]  # ranking by watch probability buys views


def test_purchases_mode_and_bad_settings():
    assert SimulatedOutcomes("x", mode="purchases").names == ("purchases",)
    with pytest.raises(ValueError, match="mode"):
        SimulatedOutcomes("x", mode="other")
    with pytest.raises(FileNotFoundError):
        SimulatedOutcomes("/nonexistent/logs").setup(
            TuningContext(tasks=("cvr", "vtr"), ensemble="linear", predictions=None)
        )
