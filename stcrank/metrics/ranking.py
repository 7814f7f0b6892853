"""torchmetrics ``Metric`` classes for stage-candidate ranking, corpus retrieval and exposure LogLoss.

Every metric here keeps additive sum states (``dist_reduce_fx="sum"``), so under DDP the synchronised result is
exactly the metric of the union of all processes' data (no average of per-process averages). The definitions and
tie rule are those of :mod:`stcrank.metrics.functional`. A metric over nothing it can be defined on (no counted
request, no positive, no exposure, a single class for AUC) is NaN, never ``0``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import BinaryAUROC
from torchmetrics.utilities.data import dim_zero_cat

from stcrank.metrics.functional import _binary_labels, _check_ks, _check_ties, log_loss_sums, ranking_sums_padded
from stcrank.metrics.retrieval import retrieval_sums

__all__ = [
    "BinaryAUC",
    "BinaryLogLoss",
    "CorpusRetrievalMetrics",
    "NormalizedNDCG",
    "NormalizedRecall",
    "RecFlowNDCG",
    "RecFlowRecall",
    "StageCandidateMetrics",
    "exposure_metrics",
]


def _safe_div(numerator: Tensor, denominator: Tensor) -> Tensor:
    """``numerator / denominator`` as float32, NaN where the denominator is ``0`` (the metric is undefined)."""
    denominator = denominator.double()
    return torch.where(denominator > 0, numerator / denominator.clamp(min=1e-300), float("nan")).float()


class _RankingSumsMetric(Metric):
    """Accumulates :class:`~stcrank.metrics.functional.RankingSums` of padded ``[B, C]`` batches."""

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, ks: Sequence[int], ties: str = "pessimistic") -> None:
        super().__init__()
        self.ks = tuple(_check_ks(ks))
        _check_ties(ties)
        self.ties = ties
        size = len(self.ks)
        for name in ("hits", "dcg", "ndcg_sum", "recall_sum"):
            self.add_state(name, default=torch.zeros(size, dtype=torch.float64), dist_reduce_fx="sum")
        for name in ("num_positives", "num_requests"):
            self.add_state(name, default=torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor, mask: Tensor) -> None:
        """Add a batch of requests.

        Args:
            preds: Scores, float ``[B, C]``, one request per row.
            target: 0/1 labels, ``[B, C]``.
            mask: Bool ``[B, C]``, ``True`` on real candidates.
        """
        sums = ranking_sums_padded(preds, target, mask, self.ks, self.ties)
        self.hits += sums.hits
        self.dcg += sums.dcg
        self.ndcg_sum += sums.ndcg_sum
        self.recall_sum += sums.recall_sum
        self.num_positives += sums.num_positives
        self.num_requests += sums.num_requests


class StageCandidateMetrics(_RankingSumsMetric):
    """RecFlow and normalised Recall/NDCG at several cut-offs from one sort per batch.

    ``compute()`` returns a dict with, for every ``K`` in ``ks``:

    * ``recall@K``: RecFlow Recall@K (micro over positives);
    * ``ndcg@K``: RecFlow DCG-per-positive, reported as NDCG by the RecFlow paper (no IDCG);
    * ``norm_ndcg@K``: standard NDCG@K averaged over requests;
    * ``norm_recall@K``: standard Recall@K averaged over requests.

    Only requests with ``0 < #pos < #candidates`` count; ties are pessimistic unless ``ties="expected"``.

    Args:
        ks: Cut-offs, RecFlow's stage-candidate evaluation uses 50, 100 and 200.
        ties: ``pessimistic`` (positives after negatives among equal scores) or ``expected`` (the mean over all
            orderings of tied candidates), see :mod:`stcrank.metrics.functional`.
    """

    def __init__(self, ks: Sequence[int] = (50, 100, 200), ties: str = "pessimistic") -> None:
        super().__init__(ks, ties)

    def compute(self) -> dict[str, Tensor]:
        """Return every metric at every cut-off, keyed ``"{name}@{K}"``."""
        recall = _safe_div(self.hits, self.num_positives)
        ndcg = _safe_div(self.dcg, self.num_positives)
        norm_ndcg = _safe_div(self.ndcg_sum, self.num_requests)
        norm_recall = _safe_div(self.recall_sum, self.num_requests)
        out: dict[str, Tensor] = {}
        for i, k in enumerate(self.ks):
            out[f"recall@{k}"] = recall[i]
            out[f"ndcg@{k}"] = ndcg[i]
            out[f"norm_ndcg@{k}"] = norm_ndcg[i]
            out[f"norm_recall@{k}"] = norm_recall[i]
        return out


class RecFlowRecall(_RankingSumsMetric):
    """RecFlow Recall@K of padded request lists: top-``k`` hits over all positives of counted requests.

    Args:
        k: Cut-off.
    """

    def __init__(self, k: int) -> None:
        super().__init__([k])

    def compute(self) -> Tensor:
        """Return the metric over everything seen (NaN when no request counted)."""
        return _safe_div(self.hits, self.num_positives)[0]


class RecFlowNDCG(_RankingSumsMetric):
    """RecFlow DCG-per-positive@K (the RecFlow paper's "NDCG", without IDCG) of padded request lists.

    Args:
        k: Cut-off.
    """

    def __init__(self, k: int) -> None:
        super().__init__([k])

    def compute(self) -> Tensor:
        """Return the metric over everything seen (NaN when no request counted)."""
        return _safe_div(self.dcg, self.num_positives)[0]


class NormalizedNDCG(_RankingSumsMetric):
    """Standard NDCG@K (binary gains, DCG / IDCG) averaged over counted requests of padded lists.

    Args:
        k: Cut-off.
    """

    def __init__(self, k: int) -> None:
        super().__init__([k])

    def compute(self) -> Tensor:
        """Return the metric over everything seen (NaN when no request counted)."""
        return _safe_div(self.ndcg_sum, self.num_requests)[0]


class NormalizedRecall(_RankingSumsMetric):
    """Standard Recall@K (hits / #pos per request) averaged over counted requests of padded lists.

    Args:
        k: Cut-off.
    """

    def __init__(self, k: int) -> None:
        super().__init__([k])

    def compute(self) -> Tensor:
        """Return the metric over everything seen (NaN when no request counted)."""
        return _safe_div(self.recall_sum, self.num_requests)[0]


class CorpusRetrievalMetrics(Metric):
    """RecFlow retrieval Recall@K and DCG-per-positive@K over a full-corpus top-K list.

    Update with the output of :func:`stcrank.metrics.retrieval.topk_over_corpus` and each request's positives.
    ``compute()`` returns ``{"recall@K": ..., "ndcg@K": ...}`` (micro over positives, no IDCG, as in RecFlow's
    retrieval evaluation).

    Args:
        ks: Cut-offs, RecFlow's retrieval evaluation uses 50, 100, 500 and 1000.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, ks: Sequence[int] = (50, 100, 500, 1000)) -> None:
        super().__init__()
        self.ks = tuple(_check_ks(ks))
        self.add_state("hits", default=torch.zeros(len(self.ks), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("dcg", default=torch.zeros(len(self.ks), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("num_positives", default=torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, topk_indices: Tensor, positives: Tensor, positive_mask: Tensor) -> None:
        """Add a batch of requests.

        Args:
            topk_indices: Retrieved corpus rows, best first, long ``[B, K']`` with ``K' >= max(ks)``.
            positives: Corpus row of each positive, long ``[B, P]``.
            positive_mask: Bool ``[B, P]``, ``True`` on real positives.
        """
        hits, dcg, num_positives = retrieval_sums(topk_indices, positives, positive_mask, self.ks)
        self.hits += hits
        self.dcg += dcg
        self.num_positives += num_positives

    def compute(self) -> dict[str, Tensor]:
        """Return ``recall@K`` and ``ndcg@K`` for every cut-off."""
        recall = _safe_div(self.hits, self.num_positives)
        ndcg = _safe_div(self.dcg, self.num_positives)
        out: dict[str, Tensor] = {}
        for i, k in enumerate(self.ks):
            out[f"recall@{k}"] = recall[i]
            out[f"ndcg@{k}"] = ndcg[i]
        return out


class BinaryLogLoss(Metric):
    """Global LogLoss (mean binary cross-entropy) of predicted probabilities.

    torchmetrics has no LogLoss; this one clips probabilities to ``[eps, 1 - eps]`` like scikit-learn's
    ``log_loss`` (``eps`` defaults to the machine epsilon of the predictions' dtype) and accumulates a float64
    sum and a count, so the result is exact under DDP.

    Args:
        eps: Clipping bound; ``None`` for the dtype's machine epsilon.
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(self, eps: float | None = None) -> None:
        super().__init__()
        if eps is not None and not 0.0 < eps < 0.5:
            raise ValueError(f"eps must be in (0, 0.5), got {eps}")
        self.eps = eps
        self.add_state("loss_sum", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Add a batch.

        Args:
            preds: Probabilities in ``[0, 1]``, any shape.
            target: 0/1 labels, same shape.
        """
        total, count = log_loss_sums(preds.reshape(-1), target.reshape(-1), self.eps)
        self.loss_sum += total
        self.count += count

    def compute(self) -> Tensor:
        """Return the mean LogLoss over everything seen (NaN when nothing was seen)."""
        return _safe_div(self.loss_sum, self.count)


class BinaryAUC(BinaryAUROC):
    """Exact global ROC AUC (torchmetrics' ``BinaryAUROC``) that is NaN where it is undefined.

    ``BinaryAUROC`` returns ``0`` (with a warning) when every label is of one class, a number that reads as a
    perfectly wrong model. Here the AUC of a single class (or of nothing) is NaN, and NaN scores are rejected
    at ``update`` instead of being ranked arbitrarily.
    """

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Accumulate a batch of scores and 0/1 labels.

        Args:
            preds: Probabilities or logits, floating point.
            target: 0/1 labels of the same shape (bool, integer or float); any other value is refused, as
                ``BinaryAUROC`` would silently ignore or miscount it.

        Raises:
            ValueError: When the shapes differ, ``preds`` holds NaN, or ``target`` holds a value other than 0
                and 1.
        """
        if preds.shape != target.shape:
            raise ValueError(
                f"BinaryAUC: preds and target must have the same shape; got {tuple(preds.shape)}, {tuple(target.shape)}"
            )
        if bool(torch.isnan(preds).any()):
            raise ValueError("BinaryAUC: preds contains NaN scores; expected finite probabilities or logits")
        try:
            labels = _binary_labels(target, None)
        except ValueError as error:
            raise ValueError(f"BinaryAUC: {error}") from error
        super().update(preds, labels.long())

    def compute(self) -> Tensor:
        """The AUC over everything seen; NaN when the labels seen are all of one class or nothing was seen."""
        target = dim_zero_cat(self.target) if isinstance(self.target, list) and self.target else self.target
        if isinstance(target, list) or target.numel() == 0 or bool(target.min() == target.max()):
            return torch.tensor(float("nan"))
        return super().compute()


def exposure_metrics(eps: float | None = None) -> MetricCollection:
    """AUC and LogLoss of exposure-level probabilities, as RecFlow's coarse and rank evaluations report them.

    Both are global over all exposures (not per-user GAUC). The AUC is :class:`BinaryAUC`: torchmetrics' exact
    ``BinaryAUROC``, NaN when only one class was seen.

    Args:
        eps: LogLoss clipping bound, see :class:`BinaryLogLoss`.

    Returns:
        A collection with keys ``"auc"`` and ``"logloss"``, updated with ``(probabilities, labels)``.
    """
    return MetricCollection({"auc": BinaryAUC(), "logloss": BinaryLogLoss(eps=eps)})
