"""Comparisons over training seeds: total uncertainty, minimum detectable effect and a four-way verdict.

Every row of a report is trained with several seeds, and seed ``s`` of a row is compared with seed ``s`` of its
baseline (same training seed; in the simulator also the same evaluation sessions, drawn for that seed). Each seed
gives a paired difference ``d_s`` with a within-evaluation standard error ``se_s`` (for the simulator, the paired
SE over its sessions). The estimator of the effect is the mean over the ``n`` seeds, ``d = mean(d_s)``; its
standard error comes from the spread of the ``d_s``, which holds both the training randomness and the evaluation
noise (each seed is evaluated on its own sessions):

``SE = max(sd(d_s) / sqrt(n), sqrt(mean(se_s^2) / n))``, on ``n - 1`` degrees of freedom,

floored at the evaluation-only SE because the sample SD of a few seeds can fall below it by chance. The test is
a t-test of ``d`` against 0 on ``n - 1`` degrees of freedom; with a single seed there is no spread, the SE is the
evaluation's alone (the normal distribution, training randomness *not* counted, which the report says).
The between-seed (training) standard deviation is estimated by ``sqrt(max(0, var(d_s) - mean(se_s^2)))``.

The verdict of a paper direction, with ``E`` the paper's effect and the report's minimum detectable effect
``MDE = (t_{1 - alpha/2, df} + t_{power, df}) * SE`` (:func:`~stcrank.reports.stats.minimum_detectable_effect`):

* **holds**: significant (``p < alpha``) in the paper's direction;
* **reversed**: significant against it;
* **no effect larger than the MDE**: not significant, and ``MDE <= |E|``: an effect as large as the paper's
  would have been found with probability ``power``;
* **underpowered**: not significant, and ``MDE > |E|`` (or the paper gives no effect size): the report is too
  small to tell.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from stcrank.reports.stats import mean, minimum_detectable_effect, sample_std, student_t_two_sided_p

__all__ = [
    "ALPHA",
    "NO_EFFECT",
    "POWER",
    "UNDERPOWERED",
    "VERDICTS",
    "CombinedEffect",
    "combine_seeds",
    "verdict",
]

ALPHA = 0.05
"""Two-sided significance level of every comparison."""
POWER = 0.8
"""Power at which the minimum detectable effect is stated."""
NO_EFFECT = "no effect larger than the MDE"
UNDERPOWERED = "underpowered"
VERDICTS = ("holds", "reversed", NO_EFFECT, UNDERPOWERED)
"""The verdicts of a paper direction, in that order of precedence."""


@dataclass(frozen=True)
class CombinedEffect:
    """A paired effect estimated over training seeds.

    Attributes:
        seeds: Number of seeds ``n``.
        effect: Mean of the per-seed effects.
        se: Total standard error of the mean (see the module docstring).
        df: Degrees of freedom of ``se`` (``n - 1``; ``inf`` for one seed).
        t: ``effect / se``.
        p_value: Two-sided p-value.
        mde: Minimum detectable effect at :data:`ALPHA` and :data:`POWER`.
        within_se: The SE of the mean from the evaluation noise alone, ``sqrt(mean(se_s^2) / n)``.
        between_sd: Estimated SD of one seed's effect due to training, ``sqrt(max(0, var(d_s) - mean(se_s^2)))``
            (NaN for one seed).
        per_seed: The per-seed effects ``d_s``.
        training_counted: Whether the SE includes the training randomness (two seeds or more).
    """

    seeds: int
    effect: float
    se: float
    df: float
    t: float
    p_value: float
    mde: float
    within_se: float
    between_sd: float
    per_seed: tuple[float, ...]
    training_counted: bool

    @property
    def significant(self) -> bool:
        """Whether ``p < alpha`` (:data:`ALPHA`)."""
        return not math.isnan(self.p_value) and self.p_value < ALPHA

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (``df = inf`` becomes None)."""
        out = asdict(self)
        out["per_seed"] = list(self.per_seed)
        out["df"] = None if math.isinf(self.df) else self.df
        return out


def combine_seeds(effects: Sequence[float], within_se: Sequence[float]) -> CombinedEffect:
    """Combine per-seed paired effects into one estimate with its total uncertainty (:data:`ALPHA`, :data:`POWER`).

    Args:
        effects: The effect ``d_s`` of each seed.
        within_se: The within-evaluation SE ``se_s`` of each seed's effect.

    Returns:
        The combined effect.

    Raises:
        ValueError: If the sequences are empty or differ in length.
    """
    if not effects or len(effects) != len(within_se):
        raise ValueError(f"need one within-evaluation SE per seed effect; got {len(effects)} and {len(within_se)}")
    n = len(effects)
    centre = mean(effects)
    within = math.sqrt(mean([se * se for se in within_se]) / n)
    if n >= 2:
        spread = sample_std(effects)
        se = max(spread / math.sqrt(n), within)
        df: float = n - 1
        between = math.sqrt(max(0.0, spread * spread - mean([s * s for s in within_se])))
    else:
        se, df, between = within, math.inf, math.nan
    if se > 0:
        t = centre / se
        p = student_t_two_sided_p(t, df) if not math.isinf(df) else 2.0 * (1.0 - _normal_cdf(abs(t)))
    else:
        t = 0.0 if centre == 0 else math.copysign(math.inf, centre)
        p = 1.0 if centre == 0 else 0.0
    mde = minimum_detectable_effect(se, df, ALPHA, POWER)
    return CombinedEffect(n, centre, se, df, t, p, mde, within, between, tuple(effects), n >= 2)


def _normal_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def verdict(combined: CombinedEffect, expect: Literal["up", "down"], paper_effect: float | None) -> str:
    """The four-way verdict of a paper direction (see the module docstring).

    Args:
        combined: The measured effect.
        expect: The paper's direction.
        paper_effect: The paper's effect size (its sign is ignored; None when the paper gives none).

    Returns:
        One of :data:`VERDICTS`.
    """
    if expect not in ("up", "down"):
        raise ValueError(f"expect must be 'up' or 'down', got {expect!r}")
    if combined.significant:
        return "holds" if (combined.effect > 0) == (expect == "up") else "reversed"
    if paper_effect is not None and not math.isnan(combined.mde) and combined.mde <= abs(paper_effect):
        return NO_EFFECT
    return UNDERPOWERED
