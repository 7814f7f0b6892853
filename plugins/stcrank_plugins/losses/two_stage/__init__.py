"""Two-stage cascade losses of the LCRON benchmark: both stages' scores of each request in one loss.

Every loss of this package is a :class:`~stcrank_plugins.losses.two_stage.common.TwoStageLoss`: it takes the
scores of the first stage (retrieval) and of the second stage (pre-rank) for the same candidates, stacked as
``[B, 2, L]``, the candidates' graded relevance as the target and the padding mask.
"""
