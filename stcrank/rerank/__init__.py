"""Multi-slot re-ranking utilities: the list objective, prefix scorers, analysis and reference solutions.

The re-rankers themselves are plugins of group ``stcrank.rerankers`` (``greedy``, ``beam_search``, ``exact``);
this package holds what they share and what evaluates them:

- :func:`sequence_value` / :func:`continue_products`: the objective ``V = sum_i p_i v_i``.
- :class:`PrefixScorer` and its implementations: the pluggable prefix valuation of beam search.
- :func:`hit_rate_at_k` and companions: how a re-ranked list differs from the point-wise one (paper Table 8).
- :func:`brute_force_rerank`: the optimum by enumeration, to test re-rankers against.
- :func:`stable_topk`: the deterministic top-k every re-ranker selects with.
- :func:`intra_op_threads`: the torch threads a re-ranking call runs with (one by default, see
  :mod:`stcrank.rerank.threads`).
"""

from stcrank.rerank.analysis import (
    ChangeRates,
    hit_rate_at_k,
    hit_rate_table,
    position_agreement_at_k,
    relative_gap,
    rerank_change_rates,
)
from stcrank.rerank.brute_force import BruteForceResult, brute_force_rerank, ordered_subsets, random_instances
from stcrank.rerank.ordering import compact_mask, stable_topk
from stcrank.rerank.prefix_scorers import (
    PREFIX_SCORERS,
    BeamState,
    CategoryDiversityScorer,
    PointwisePrefixScorer,
    PrefixScorer,
    resolve_prefix_scorer,
)
from stcrank.rerank.sequence import continue_products, sequence_value
from stcrank.rerank.threads import RERANK_THREADS, intra_op_threads
from stcrank.rerank.validation import (
    check_batch,
    check_context,
    check_continue_prob,
    check_order,
    check_scores,
    check_values,
)

__all__ = [
    "PREFIX_SCORERS",
    "RERANK_THREADS",
    "BeamState",
    "BruteForceResult",
    "CategoryDiversityScorer",
    "ChangeRates",
    "PointwisePrefixScorer",
    "PrefixScorer",
    "brute_force_rerank",
    "check_batch",
    "check_context",
    "check_continue_prob",
    "check_order",
    "check_scores",
    "check_values",
    "compact_mask",
    "continue_products",
    "hit_rate_at_k",
    "hit_rate_table",
    "intra_op_threads",
    "ordered_subsets",
    "position_agreement_at_k",
    "random_instances",
    "relative_gap",
    "rerank_change_rates",
    "resolve_prefix_scorer",
    "sequence_value",
    "stable_topk",
]
