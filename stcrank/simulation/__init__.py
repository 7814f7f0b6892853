"""The e-shop explore/focus session simulator and policy evaluation.

* :mod:`~stcrank.simulation.world`: the latent population (users, items, categories with involvement).
* :mod:`~stcrank.simulation.truth`: closed-form true probabilities (vtr at any threshold, cvr, sdr, ctr...).
* :mod:`~stcrank.simulation.focus`: F-stage sessions; :mod:`~stcrank.simulation.explore`: homepage visits.
* :mod:`~stcrank.simulation.policies`: the policy contract and built-in policies.
* :mod:`~stcrank.simulation.evaluation`: common-random-number A/B comparison with paired standard errors.
* :mod:`~stcrank.simulation.calibration`: Table 2 exit rates of served traffic and their calibration.
"""

from stcrank.simulation.calibration import PAPER_TABLE2, ExitRates, calibrate_exit_rates, served_exit_rates
from stcrank.simulation.config import (
    DEFAULT_CATEGORIES,
    BehaviourConfig,
    CategorySpec,
    ExploreConfig,
    FocusConfig,
    WorldConfig,
)
from stcrank.simulation.evaluation import (
    Evaluation,
    MetricSummary,
    PairedDelta,
    evaluate_explore,
    evaluate_focus,
    paired_delta,
)
from stcrank.simulation.explore import (
    ExploreResult,
    estimate_f_conversion,
    f_conversion_table,
    sample_focus_starts,
    sample_visits,
    simulate_explore,
)
from stcrank.simulation.focus import FocusResult, FocusStarts, simulate_focus
from stcrank.simulation.policies import (
    EPolicy,
    EPredictor,
    ERandomPolicy,
    ETruthPredictor,
    EValuePolicy,
    FPolicy,
    FPredictor,
    RandomPolicy,
    TruthPredictor,
    ValuePolicy,
    WeightedSum,
    explore_logging_policy,
    focus_logging_policy,
)
from stcrank.simulation.requests import ERequest, FRequest
from stcrank.simulation.truth import ExploreTruth, FocusTruth, explore_truth, focus_truth, pair_terms, vtr
from stcrank.simulation.world import World

__all__ = [
    "DEFAULT_CATEGORIES",
    "PAPER_TABLE2",
    "BehaviourConfig",
    "CategorySpec",
    "EPolicy",
    "EPredictor",
    "ERandomPolicy",
    "ERequest",
    "ETruthPredictor",
    "EValuePolicy",
    "Evaluation",
    "ExitRates",
    "ExploreConfig",
    "ExploreResult",
    "ExploreTruth",
    "FPolicy",
    "FPredictor",
    "FRequest",
    "FocusConfig",
    "FocusResult",
    "FocusStarts",
    "FocusTruth",
    "MetricSummary",
    "PairedDelta",
    "RandomPolicy",
    "TruthPredictor",
    "ValuePolicy",
    "WeightedSum",
    "World",
    "WorldConfig",
    "calibrate_exit_rates",
    "estimate_f_conversion",
    "evaluate_explore",
    "evaluate_focus",
    "explore_logging_policy",
    "explore_truth",
    "f_conversion_table",
    "focus_logging_policy",
    "focus_truth",
    "pair_terms",
    "paired_delta",
    "sample_focus_starts",
    "sample_visits",
    "served_exit_rates",
    "simulate_explore",
    "simulate_focus",
    "vtr",
]
