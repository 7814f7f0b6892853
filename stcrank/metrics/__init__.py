"""Metrics: AUC/LogLoss and stage-candidate Recall/NDCG."""
