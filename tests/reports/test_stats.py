import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stcrank.reports.stats import (
    mean,
    minimum_detectable_effect,
    paired_t_test,
    regularized_incomplete_beta,
    sample_std,
    seeds_needed,
    student_t_cdf,
    student_t_quantile,
    student_t_two_sided_p,
)


def test_mean_and_sample_std_match_hand_values():
    assert mean([1.0, 2.0, 3.0, 4.0]) == 2.5
    assert sample_std([1.0, 2.0, 3.0, 4.0]) == pytest.approx(math.sqrt(5.0 / 3.0))
    assert math.isnan(mean([]))
    assert math.isnan(sample_std([1.0]))


# Two-sided critical values of Student's t from printed tables: P(|T| >= t) = p.
@pytest.mark.parametrize(
    ("t", "df", "p"),
    [
        (12.706, 1, 0.05),
        (4.303, 2, 0.05),
        (3.182, 3, 0.05),
        (2.776, 4, 0.05),
        (2.571, 5, 0.05),
        (2.228, 10, 0.05),
        (2.086, 20, 0.05),
        (9.925, 2, 0.01),
        (4.604, 4, 0.01),
        (2.132, 4, 0.10),
        (1.960, 100000, 0.05),
    ],
)
def test_two_sided_p_matches_t_tables(t, df, p):
    assert student_t_two_sided_p(t, df) == pytest.approx(p, abs=2e-4)
    assert student_t_two_sided_p(-t, df) == pytest.approx(p, abs=2e-4)


@given(st.floats(min_value=-1e3, max_value=1e3, allow_nan=False))
def test_cdf_matches_closed_forms_for_one_and_two_degrees_of_freedom(t):
    # df=1 is the Cauchy distribution; df=2 has F(t) = 1/2 + t / (2 sqrt(2 + t^2)).
    assert student_t_cdf(t, 1) == pytest.approx(0.5 + math.atan(t) / math.pi, abs=1e-12)
    assert student_t_cdf(t, 2) == pytest.approx(0.5 + t / (2.0 * math.sqrt(2.0 + t * t)), abs=1e-12)


@given(st.floats(min_value=-50, max_value=50, allow_nan=False), st.integers(min_value=1, max_value=200))
def test_cdf_is_symmetric(t, df):
    assert student_t_cdf(t, df) + student_t_cdf(-t, df) == pytest.approx(1.0, abs=1e-12)


def test_p_value_edges():
    assert student_t_two_sided_p(0.0, 3) == pytest.approx(1.0)
    assert student_t_two_sided_p(math.inf, 3) == 0.0
    assert math.isnan(student_t_two_sided_p(math.nan, 3))
    with pytest.raises(ValueError, match="degrees of freedom"):
        student_t_two_sided_p(1.0, 0)


@given(
    st.floats(min_value=0.05, max_value=30),
    st.floats(min_value=0.05, max_value=30),
    st.floats(min_value=1e-3, max_value=1.0 - 1e-3),  # away from 0 and 1, where 1 - x itself rounds
)
def test_incomplete_beta_symmetry(a, b, x):
    assert regularized_incomplete_beta(a, b, x) == pytest.approx(
        1.0 - regularized_incomplete_beta(b, a, 1.0 - x), abs=1e-10
    )


@given(st.floats(min_value=0.0, max_value=1.0), st.floats(min_value=0.1, max_value=20))
def test_incomplete_beta_closed_forms(x, a):
    assert regularized_incomplete_beta(1.0, 1.0, x) == pytest.approx(x, abs=1e-12)
    assert regularized_incomplete_beta(a, 1.0, x) == pytest.approx(x**a, abs=1e-10)
    assert regularized_incomplete_beta(1.0, a, x) == pytest.approx(1.0 - (1.0 - x) ** a, abs=1e-10)


def test_incomplete_beta_rejects_bad_input():
    with pytest.raises(ValueError, match="shape"):
        regularized_incomplete_beta(0.0, 1.0, 0.5)
    with pytest.raises(ValueError, match=r"x must be in \[0, 1\]"):
        regularized_incomplete_beta(1.0, 1.0, 1.5)


def test_paired_t_test_matches_hand_computation():
    # Differences 0.5, 0.5, 1.5: mean 5/6, sd 1/sqrt(3), t = (5/6) / (1/3) = 2.5 with 2 degrees of freedom,
    # p = 1 - 2.5 / sqrt(2 + 2.5^2) (closed form for df = 2).
    test = paired_t_test([1.0, 2.0, 4.0], [0.5, 1.5, 2.5])
    assert test.n == 3 and test.df == 2
    assert test.mean_difference == pytest.approx(5.0 / 6.0)
    assert test.t == pytest.approx(2.5)
    assert test.p_value == pytest.approx(1.0 - 2.5 / math.sqrt(8.25))
    assert not test.significant(0.05)
    reverse = paired_t_test([0.5, 1.5, 2.5], [1.0, 2.0, 4.0])
    assert reverse.t == pytest.approx(-2.5) and reverse.p_value == pytest.approx(test.p_value)


def test_paired_t_test_degenerate_cases():
    constant = paired_t_test([1.1, 2.1, 3.1], [1.0, 2.0, 3.0])
    assert constant.t == math.inf and constant.p_value == 0.0 and constant.significant()
    same = paired_t_test([1.0, 2.0], [1.0, 2.0])
    assert same.t == 0.0 and same.p_value == 1.0
    single = paired_t_test([1.0], [0.0])
    assert single.n == 1 and math.isnan(single.p_value) and not single.significant()
    with_nan = paired_t_test([1.0, math.nan, 4.0, 3.0], [0.5, 1.0, 2.5, 3.5])
    assert with_nan.n == 3
    with pytest.raises(ValueError, match="differ in length"):
        paired_t_test([1.0, 2.0], [1.0])


def test_paired_t_test_detects_a_consistent_shift():
    baseline = [0.70, 0.72, 0.69, 0.71, 0.73]
    better = [b + 0.01 + 0.001 * i for i, b in enumerate(baseline)]
    test = paired_t_test(better, baseline)
    assert test.significant(0.05) and test.mean_difference > 0


# One-sided quantiles of Student's t from printed tables (and the normal for df = inf).
@pytest.mark.parametrize(
    ("q", "df", "t"),
    [
        (0.975, 1, 12.706),
        (0.975, 2, 4.303),
        (0.975, 4, 2.776),
        (0.975, 9, 2.262),
        (0.8, 2, 1.061),
        (0.8, 9, 0.883),
        (0.8, 29, 0.854),
        (0.975, math.inf, 1.95996),
        (0.8, math.inf, 0.84162),
        (0.025, 4, -2.776),
    ],
)
def test_student_t_quantile_matches_tables(q, df, t):
    assert student_t_quantile(q, df) == pytest.approx(t, abs=1e-3)


@given(st.floats(0.001, 0.999), st.floats(0.5, 200.0))
def test_student_t_quantile_inverts_the_cdf(q, df):
    assert student_t_cdf(student_t_quantile(q, df), df) == pytest.approx(q, abs=1e-9)


def test_minimum_detectable_effect_by_hand():
    # Large df: (1.95996 + 0.84162) * se = 2.8016 * se; df = 4: (2.7764 + 0.9410) * se.
    assert minimum_detectable_effect(1.0, math.inf) == pytest.approx(2.8016, abs=1e-4)
    assert minimum_detectable_effect(0.5, 4) == pytest.approx(0.5 * (2.7764 + 0.9410), abs=1e-3)
    assert math.isnan(minimum_detectable_effect(math.nan, 3))
    with pytest.raises(ValueError):
        student_t_quantile(1.0, 3)


def test_seeds_needed_is_the_first_size_whose_mde_reaches_the_effect():
    n = seeds_needed(sd=1.0, effect=1.0)
    assert n is not None and minimum_detectable_effect(1 / math.sqrt(n), n - 1) <= 1.0
    assert minimum_detectable_effect(1 / math.sqrt(n - 1), n - 2) > 1.0
    assert n == 10  # (2.306 + 0.889) / sqrt(9) = 1.065 > 1 >= (2.262 + 0.883) / sqrt(10) = 0.995
    assert seeds_needed(sd=0.0, effect=0.1) == 2
    assert seeds_needed(sd=1.0, effect=0.0) is None
    assert seeds_needed(sd=1.0, effect=0.001, at_most=100) is None
