"""Metrics: AUC/GAUC/LogLoss, stage-candidate Recall/NDCG (RecFlow and normalised) and full-corpus retrieval."""

from stcrank.metrics import functional
from stcrank.metrics.functional import *  # noqa: F403 - re-exports the names of functional.__all__
from stcrank.metrics.gauc import GroupAUC, GroupAUCResult, group_auc
from stcrank.metrics.ranking import (
    BinaryLogLoss,
    CorpusRetrievalMetrics,
    NormalizedNDCG,
    NormalizedRecall,
    RecFlowNDCG,
    RecFlowRecall,
    StageCandidateMetrics,
    exposure_metrics,
)
from stcrank.metrics.retrieval import retrieval_ndcg, retrieval_recall, retrieval_sums, topk_over_corpus

__all__ = [
    *functional.__all__,
    "BinaryLogLoss",
    "CorpusRetrievalMetrics",
    "GroupAUC",
    "GroupAUCResult",
    "NormalizedNDCG",
    "NormalizedRecall",
    "RecFlowNDCG",
    "RecFlowRecall",
    "StageCandidateMetrics",
    "exposure_metrics",
    "group_auc",
    "retrieval_ndcg",
    "retrieval_recall",
    "retrieval_sums",
    "topk_over_corpus",
]
