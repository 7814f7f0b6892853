import pytest

from stcrank.simulation.calibration import PAPER_TABLE2, calibrate_exit_rates, served_exit_rates
from stcrank.simulation.config import FocusConfig, WorldConfig
from stcrank.simulation.explore import sample_focus_starts
from stcrank.simulation.focus import simulate_focus
from stcrank.simulation.policies import focus_logging_policy
from stcrank.simulation.world import World


def test_default_behaviour_shows_the_paper_table2_exit_rates():
    """Served by the logging policy, the defaults give 19.7% / 61.3% immediate exits (+-2 points)."""
    world = World.build(seed=0)
    starts = sample_focus_starts(world, 5000, seed=7)
    result = simulate_focus(world, focus_logging_policy(), starts, seed=7, record=True)
    rates = served_exit_rates(result)
    no_purchase, purchase = PAPER_TABLE2["immediate"]
    assert abs(rates.no_purchase_expected - no_purchase) < 0.02, rates
    assert abs(rates.purchase_expected - purchase) < 0.02, rates
    assert abs(rates.no_purchase - no_purchase) < 0.02, rates
    se = (purchase * (1 - purchase) / rates.purchases) ** 0.5
    assert abs(rates.purchase - rates.purchase_expected) < 4 * se, rates
    assert rates.purchases > 300
    # the later rows of Table 2 come out near the paper's too (not calibrated)
    assert abs(rates.within_3_no_purchase - PAPER_TABLE2["within_3"][0]) < 0.06
    assert abs(rates.within_5_purchase - PAPER_TABLE2["within_5"][1]) < 0.06


def test_calibration_moves_the_intercepts_to_other_targets():
    world = World.build(WorldConfig(users=300, items=4000, brands=120), seed=0)
    config = FocusConfig(candidates=60)
    behaviour = calibrate_exit_rates(
        world, focus_logging_policy(), targets=(0.3, 0.5), sessions=800, iterations=4, seed=1, config=config
    )
    assert behaviour.exit_bias > world.behaviour.exit_bias
    assert behaviour.exit_after_purchase_bias < world.behaviour.exit_after_purchase_bias
    tuned = world.with_behaviour(behaviour)
    result = simulate_focus(
        tuned, focus_logging_policy(), sample_focus_starts(tuned, 800, seed=1), config=config, seed=1, record=True
    )
    rates = served_exit_rates(result)
    assert abs(rates.no_purchase_expected - 0.3) < 0.015 and abs(rates.purchase_expected - 0.5) < 0.015


def test_rates_need_a_recorded_result():
    world = World.build(WorldConfig(users=50, items=3000, brands=100), seed=0)
    result = simulate_focus(
        world, focus_logging_policy(), sample_focus_starts(world, 20, seed=0), config=FocusConfig(candidates=60)
    )
    with pytest.raises(ValueError, match="record=True"):
        served_exit_rates(result)
    with pytest.raises(ValueError, match="targets"):
        calibrate_exit_rates(world, focus_logging_policy(), targets=(0.0, 0.5))
