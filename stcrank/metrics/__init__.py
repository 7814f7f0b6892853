"""Metrics: AUC/GAUC/LogLoss, stage-candidate Recall/NDCG (RecFlow and normalised) and full-corpus retrieval."""

from stcrank.metrics.functional import (
    RankingSums,
    binary_log_loss,
    normalized_ndcg,
    normalized_ndcg_padded,
    normalized_recall,
    normalized_recall_padded,
    ranking_sums,
    ranking_sums_padded,
    recflow_ndcg,
    recflow_ndcg_padded,
    recflow_recall,
    recflow_recall_padded,
)
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
    "BinaryLogLoss",
    "CorpusRetrievalMetrics",
    "GroupAUC",
    "GroupAUCResult",
    "NormalizedNDCG",
    "NormalizedRecall",
    "RankingSums",
    "RecFlowNDCG",
    "RecFlowRecall",
    "StageCandidateMetrics",
    "binary_log_loss",
    "exposure_metrics",
    "group_auc",
    "normalized_ndcg",
    "normalized_ndcg_padded",
    "normalized_recall",
    "normalized_recall_padded",
    "ranking_sums",
    "ranking_sums_padded",
    "recflow_ndcg",
    "recflow_ndcg_padded",
    "recflow_recall",
    "recflow_recall_padded",
    "retrieval_ndcg",
    "retrieval_recall",
    "retrieval_sums",
    "topk_over_corpus",
]
