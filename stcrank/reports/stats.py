"""Summary statistics, the paired t-test and power calculations of the experiment reports, in plain Python.

The Student-t distribution function goes through the regularised incomplete beta function
``I_x(a, b)``, evaluated with its continued fraction (modified Lentz's method, as in *Numerical Recipes*,
section 6.4): for ``T ~ t(df)``, ``P(|T| >= |t|) = I_{df / (df + t^2)}(df / 2, 1 / 2)``. Its quantiles are found
by bisection on that function (``df = inf`` is the standard normal, :class:`statistics.NormalDist`).

The minimum detectable effect of a two-sided test at level ``alpha`` with power ``1 - beta``, for an estimate
with standard error ``se`` on ``df`` degrees of freedom, is the usual
``MDE = (t_{1 - alpha / 2, df} + t_{1 - beta, df}) * se`` (e.g. ``2.80 * se`` for a large ``df``, alpha = 0.05,
power = 0.8): a true effect of that size is found significant in 80% of repeated experiments.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

__all__ = [
    "TTest",
    "mean",
    "minimum_detectable_effect",
    "paired_t_test",
    "regularized_incomplete_beta",
    "sample_std",
    "seeds_needed",
    "student_t_cdf",
    "student_t_quantile",
    "student_t_two_sided_p",
]

_MAX_ITERATIONS = 500
_EPSILON = 1e-15
_TINY = 1e-300  # keeps Lentz's denominators away from zero


def mean(values: Sequence[float]) -> float:
    """The arithmetic mean; NaN for no values."""
    return math.fsum(values) / len(values) if len(values) else math.nan


def sample_std(values: Sequence[float]) -> float:
    """The sample standard deviation (``n - 1`` in the denominator); NaN for fewer than two values."""
    n = len(values)
    if n < 2:
        return math.nan
    centre = mean(values)
    return math.sqrt(math.fsum((value - centre) ** 2 for value in values) / (n - 1))


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c = 1.0
    d = 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    h = d
    for m in range(1, _MAX_ITERATIONS + 1):
        m2 = 2 * m
        # Even step of the continued fraction.
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > _TINY else _TINY)
        c = 1.0 + aa / c
        c = c if abs(c) > _TINY else _TINY
        h *= d * c
        # Odd step.
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > _TINY else _TINY)
        c = 1.0 + aa / c
        c = c if abs(c) > _TINY else _TINY
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < _EPSILON:
            return h
    raise ArithmeticError(f"incomplete beta continued fraction did not converge for a={a}, b={b}, x={x}")


def regularized_incomplete_beta(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function ``I_x(a, b)``.

    Args:
        a: First shape parameter, > 0.
        b: Second shape parameter, > 0.
        x: The point, in ``[0, 1]``.

    Returns:
        ``I_x(a, b)``, between 0 and 1.

    Raises:
        ValueError: For shape parameters that are not positive or ``x`` outside ``[0, 1]``.
    """
    if a <= 0 or b <= 0:
        raise ValueError(f"shape parameters must be > 0, got a={a}, b={b}")
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"x must be in [0, 1], got {x}")
    return _incomplete_beta(a, b, x, 1.0 - x)


def _incomplete_beta(a: float, b: float, x: float, y: float) -> float:
    """``I_x(a, b)`` given both ``x`` and ``y = 1 - x``, so that a caller can pass an exact ``y`` near ``x = 1``."""
    if x <= 0.0:
        return 0.0
    if y <= 0.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log(y)
    # The continued fraction converges fast for x < (a + 1) / (a + b + 2); on the other side use the symmetry
    # I_x(a, b) = 1 - I_{1-x}(b, a).
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_continued_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_continued_fraction(b, a, y) / b


def student_t_two_sided_p(t: float, df: float) -> float:
    """The two-sided p-value ``P(|T| >= |t|)`` of Student's t distribution with ``df`` degrees of freedom.

    Args:
        t: The statistic (``±inf`` gives 0).
        df: Degrees of freedom, > 0.

    Returns:
        The p-value; NaN when ``t`` is NaN.
    """
    if df <= 0:
        raise ValueError(f"degrees of freedom must be > 0, got {df}")
    if math.isnan(t):
        return math.nan
    if math.isinf(t):
        return 0.0
    # x = df / (df + t^2) is within rounding of 1 for small t: pass 1 - x = t^2 / (df + t^2) exactly.
    denominator = df + t * t
    return min(1.0, _incomplete_beta(df / 2.0, 0.5, df / denominator, t * t / denominator))


def student_t_cdf(t: float, df: float) -> float:
    """The distribution function ``P(T <= t)`` of Student's t distribution with ``df`` degrees of freedom."""
    tail = student_t_two_sided_p(t, df) / 2.0
    return 1.0 - tail if t > 0 else tail


def student_t_quantile(q: float, df: float) -> float:
    """The quantile ``t`` with ``P(T <= t) = q`` of Student's t distribution (``df = inf``: the standard normal).

    Args:
        q: Probability, strictly between 0 and 1.
        df: Degrees of freedom, > 0 (``math.inf`` for the normal).

    Returns:
        The quantile.

    Raises:
        ValueError: For ``q`` outside (0, 1) or ``df <= 0``.
    """
    if not 0.0 < q < 1.0:
        raise ValueError(f"q must be in (0, 1), got {q}")
    if df <= 0:
        raise ValueError(f"degrees of freedom must be > 0, got {df}")
    if math.isinf(df):
        return NormalDist().inv_cdf(q)
    if q < 0.5:
        return -student_t_quantile(1.0 - q, df)
    low, high = 0.0, 1.0
    while student_t_cdf(high, df) < q:
        low, high = high, 2.0 * high
    for _ in range(200):  # bisection to full double precision
        middle = (low + high) / 2.0
        if middle in (low, high):
            break
        if student_t_cdf(middle, df) < q:
            low = middle
        else:
            high = middle
    return (low + high) / 2.0


def minimum_detectable_effect(se: float, df: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest true effect a two-sided t-test at level ``alpha`` finds significant with probability ``power``.

    ``MDE = (t_{1 - alpha / 2, df} + t_{power, df}) * se``.

    Args:
        se: Standard error of the estimated effect.
        df: Degrees of freedom of that standard error (``math.inf`` when it is known, e.g. from many sessions).
        alpha: Significance level.
        power: Wanted power.

    Returns:
        The MDE, in the units of ``se``; NaN when ``se`` is NaN.
    """
    if math.isnan(se):
        return math.nan
    return (student_t_quantile(1.0 - alpha / 2.0, df) + student_t_quantile(power, df)) * se


def seeds_needed(
    sd: float, effect: float, alpha: float = 0.05, power: float = 0.8, at_least: int = 2, at_most: int = 10_000
) -> int | None:
    """The fewest paired seeds ``n`` whose mean difference has an MDE at or below ``|effect|``.

    With ``n`` seeds the mean of the per-seed differences has ``se = sd / sqrt(n)`` on ``n - 1`` degrees of
    freedom; this returns the smallest ``n >= at_least`` with ``minimum_detectable_effect(se, n - 1) <= |effect|``.

    Args:
        sd: Standard deviation of one seed's difference (e.g. the sample SD of the observed paired differences).
        effect: The effect to detect (its sign is ignored).
        alpha: Significance level.
        power: Wanted power.
        at_least: Smallest ``n`` considered (2: a t-test needs two).
        at_most: Largest ``n`` considered.

    Returns:
        The number of seeds, or None when even ``at_most`` seeds do not suffice (or ``effect`` is 0 or NaN).
    """
    if math.isnan(sd) or math.isnan(effect) or effect == 0:
        return None
    if sd == 0:
        return at_least
    # The normal-theory size is a lower bound (t quantiles exceed normal ones): start the search there.
    normal = (minimum_detectable_effect(sd, math.inf, alpha, power) / abs(effect)) ** 2
    if normal > at_most:
        return None
    for n in range(max(at_least, math.ceil(normal)), at_most + 1):
        if minimum_detectable_effect(sd / math.sqrt(n), n - 1, alpha, power) <= abs(effect):
            return n
    return None


@dataclass(frozen=True)
class TTest:
    """The result of a paired t-test of ``a`` against ``b``.

    Attributes:
        n: Number of pairs used (pairs with a NaN are left out).
        mean_difference: Mean of ``a - b``.
        t: The t statistic (``±inf`` when every difference is the same non-zero number; NaN with fewer than 2 pairs).
        df: Degrees of freedom, ``n - 1``.
        p_value: Two-sided p-value (NaN with fewer than 2 pairs).
    """

    n: int
    mean_difference: float
    t: float
    df: int
    p_value: float

    def significant(self, alpha: float = 0.05) -> bool:
        """Whether the difference is significant at level ``alpha`` (False when there is no test)."""
        return not math.isnan(self.p_value) and self.p_value < alpha


def paired_t_test(a: Sequence[float], b: Sequence[float]) -> TTest:
    """Two-sided paired t-test of the mean of ``a - b`` against zero.

    Args:
        a: One measurement per pair (e.g. a method's metric for seeds 0..n-1).
        b: The paired measurements (e.g. the baseline's metric for the same seeds), as long as ``a``.

    Returns:
        The test. Every difference equal: ``t = ±inf, p = 0`` if non-zero, ``t = 0, p = 1`` if zero.

    Raises:
        ValueError: If ``a`` and ``b`` differ in length.
    """
    if len(a) != len(b):
        raise ValueError(f"paired samples differ in length: {len(a)} and {len(b)}")
    differences = [x - y for x, y in zip(a, b, strict=True) if not (math.isnan(x) or math.isnan(y))]
    n = len(differences)
    if n < 2:
        return TTest(n, mean(differences), math.nan, max(n - 1, 0), math.nan)
    centre = mean(differences)
    spread = sample_std(differences)
    # Differences equal up to rounding (e.g. 0.3 - 0.1 and 0.4 - 0.2) count as equal.
    if spread <= 1e-12 * max(1.0, max(abs(d) for d in differences)):
        if centre == 0.0 or abs(centre) <= 1e-12 * max(abs(x) for x in [*a, *b, 1.0]):
            return TTest(n, centre, 0.0, n - 1, 1.0)
        return TTest(n, centre, math.copysign(math.inf, centre), n - 1, 0.0)
    t = centre / (spread / math.sqrt(n))
    return TTest(n, centre, t, n - 1, student_t_two_sided_p(t, n - 1))
