import math

import pytest

from stcrank.reports.power import NO_EFFECT, UNDERPOWERED, combine_seeds, verdict
from stcrank.reports.stats import paired_t_test


def test_combined_effect_by_hand():
    # Three seeds: d = 1, 2, 3 (sd 1), within-evaluation SEs 0.1: SE = 1 / sqrt(3) on 2 df.
    c = combine_seeds([1.0, 2.0, 3.0], [0.1, 0.1, 0.1])
    assert c.effect == pytest.approx(2.0) and c.df == 2 and c.training_counted
    assert c.se == pytest.approx(1 / math.sqrt(3))
    assert c.mde == pytest.approx((4.3027 + 1.0607) / math.sqrt(3), abs=1e-3)
    assert c.within_se == pytest.approx(0.1 / math.sqrt(3))
    assert c.between_sd == pytest.approx(math.sqrt(1 - 0.01))
    # the t-test on the per-seed effects is the paired t-test of the two rows' per-seed values
    test = paired_t_test([3.0, 5.0, 7.0], [2.0, 3.0, 4.0])
    assert c.t == pytest.approx(test.t) and c.p_value == pytest.approx(test.p_value)


def test_spread_below_the_evaluation_noise_is_floored():
    c = combine_seeds([1.0, 1.0, 1.0], [0.5, 0.5, 0.5])
    assert c.se == pytest.approx(0.5 / math.sqrt(3)) and c.between_sd == 0.0


def test_one_seed_uses_the_evaluation_se_and_says_so():
    c = combine_seeds([0.3], [0.1])
    assert not c.training_counted and math.isinf(c.df) and math.isnan(c.between_sd)
    assert c.se == pytest.approx(0.1) and c.mde == pytest.approx(0.28016, abs=1e-4)
    assert c.p_value == pytest.approx(2 * (1 - 0.99865), abs=1e-4)  # z = 3
    assert c.to_dict()["df"] is None
    with pytest.raises(ValueError):
        combine_seeds([1.0], [])


@pytest.mark.parametrize(
    ("effects", "expect", "paper", "wanted"),
    [
        ([3.0, 3.1, 2.9], "up", 1.0, "holds"),
        ([3.0, 3.1, 2.9], "down", 1.0, "reversed"),
        ([0.01, -0.01, 0.02, -0.02, 0.0], "up", 1.0, NO_EFFECT),
        ([0.01, -0.01, 0.02, -0.02, 0.0], "up", 0.001, UNDERPOWERED),
        ([0.01, -0.01, 0.02, -0.02, 0.0], "up", None, UNDERPOWERED),
    ],
)
def test_four_way_verdict(effects, expect, paper, wanted):
    assert verdict(combine_seeds(effects, [0.001] * len(effects)), expect, paper) == wanted
