"""Stage-candidate ranking metrics: RecFlow's Recall/NDCG and standard normalised NDCG/Recall.

Every request is a list of candidates with a score and a 0/1 label. Two families of metrics are computed from
the same ranking:

* **RecFlow metrics** (the definitions of the RecFlow paper's released evaluation code):

  - ``recflow_recall@K = sum_{counted requests} sum_{positives} 1[rank < K] / sum_{counted requests} #pos``,
    micro-averaged over positives, not per request;
  - ``recflow_ndcg@K = sum_{counted requests} sum_{positives} 1[rank < K] / log2(rank + 2) / sum #pos``. There is
    **no IDCG normalisation**: this is the mean DCG gain per positive ("DCG-per-positive"), reported as NDCG in
    the paper. It is not bounded by 1 per request and is not comparable with normalised NDCG.

* **Normalised metrics** (the textbook per-request definitions, averaged over counted requests):

  - ``ndcg@K = mean_requests DCG@K / IDCG@K`` with ``IDCG@K = sum_{r < min(#pos, K)} 1 / log2(r + 2)``;
  - ``recall@K = mean_requests (#pos in the top K) / #pos``.

Shared rules:

* ``rank`` is the 0-based position of a candidate after sorting its request by score, descending.
* **Ties are pessimistic** by default (``ties="pessimistic"``): among candidates with equal scores, negatives are
  ranked before positives, and equal (score, label) candidates keep their input order. A model therefore never
  gains from constant scores: a model that scores everything equally ranks every positive after every negative.
  ``ties="expected"`` gives instead the expected value of every metric over all orderings of each block of tied
  candidates (each equally likely): a positive in a block of ``t`` tied candidates starting at position ``s``
  counts ``|{s..s+t-1} < K| / t`` hits and the mean of ``1[j < K] / log2(j + 2)`` over ``j`` in ``s..s+t-1``.
  Every metric is linear in those per-positive terms, so this is exactly the mean over tie orderings.
* **Eligibility**: a request counts only if ``0 < #pos < #candidates`` (a request without positives or without
  negatives says nothing about ranking). Both families use the same rule, so they are computed on the same
  requests.
* When no request counts, every metric is undefined and returned as NaN (never as a ``0`` that would read as
  a model ranking every positive last).

Inputs come in two layouts: flat (``preds``, ``target``, ``indexes`` of shape ``[N]``, like torchmetrics'
retrieval metrics, ``indexes`` being the request id of each candidate) and padded (``[B, C]`` with one request
per row and a boolean ``mask`` that is ``True`` on real candidates). Both are fully vectorised: one sort, no
Python loop over requests.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

TIE_RULES: tuple[str, ...] = ("pessimistic", "expected")
"""How tied scores rank: positives after negatives (the default), or the expected value over tie orderings."""

__all__ = [
    "TIE_RULES",
    "RankingSums",
    "binary_log_loss",
    "log_loss_sums",
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
]


class RankingSums(NamedTuple):
    """Additive statistics from which every ranking metric of this module is a ratio.

    Summing the fields of two batches gives the fields of their union, so a distributed or streaming evaluation
    stays exact. Vector fields have one entry per requested cut-off ``K``.
    """

    hits: Tensor
    """``sum 1[rank < K]`` over the positives of counted requests, float64 ``[len(ks)]``."""
    dcg: Tensor
    """``sum 1[rank < K] / log2(rank + 2)`` over the positives of counted requests, float64 ``[len(ks)]``."""
    num_positives: Tensor
    """Number of positives in counted requests, int64 scalar."""
    ndcg_sum: Tensor
    """Sum over counted requests of the normalised NDCG@K, float64 ``[len(ks)]``."""
    recall_sum: Tensor
    """Sum over counted requests of the per-request recall@K, float64 ``[len(ks)]``."""
    num_requests: Tensor
    """Number of counted requests, int64 scalar."""


def _check_ks(ks: Sequence[int]) -> list[int]:
    ks = list(ks)
    if not ks:
        raise ValueError("ks must name at least one cut-off K")
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"every cut-off K must be a positive integer, got {k!r}")
    return ks


def _binary_labels(target: Tensor, where: Tensor | None) -> Tensor:
    """Return ``target`` as bool after checking that it is 0/1 (only where ``where`` is ``True``)."""
    if target.dtype == torch.bool:
        return target
    real = target if where is None else target[where]
    if real.is_floating_point() and torch.isnan(real).any():
        raise ValueError("target contains NaN labels; expected 0/1 labels")
    if ((real != 0) & (real != 1)).any():
        raise ValueError(f"target must hold 0/1 labels, found values {torch.unique(real)[:10].tolist()}")
    return target != 0


def _check_preds(preds: Tensor, where: Tensor | None) -> None:
    if not preds.is_floating_point():
        raise ValueError(f"preds must be a floating-point tensor of scores, got dtype {preds.dtype}")
    real = preds if where is None else preds[where]
    if torch.isnan(real).any():
        raise ValueError("preds contains NaN scores")


def _check_ties(ties: str) -> None:
    if ties not in TIE_RULES:
        raise ValueError(f"ties must be one of {list(TIE_RULES)}, got {ties!r}")


def _tie_blocks(rank: Tensor, group: Tensor, score: Tensor) -> tuple[Tensor, Tensor]:
    """First position and size of the block of equal scores of every candidate.

    Args:
        rank: 0-based position within the request, ``[M]``, in sorted order (by request, then score descending).
        group: Request number of each candidate, ``[M]``, same order.
        score: Score of each candidate, ``[M]``, same order.
    """
    new_block = torch.ones_like(rank, dtype=torch.bool)
    new_block[1:] = (group[1:] != group[:-1]) | (score[1:] != score[:-1])
    block = torch.cumsum(new_block.long(), 0) - 1
    return rank[new_block][block], torch.bincount(block)[block]


def _sums_from_ranks(
    rank: Tensor,
    positive: Tensor,
    group: Tensor,
    num_candidates: Tensor,
    ks: list[int],
    block_size: Tensor | None = None,
) -> RankingSums:
    """Aggregate per-candidate ranks into :class:`RankingSums`.

    Args:
        rank: 0-based rank of each real candidate within its request, int64 ``[M]``; with ``block_size``, the
            first position of the candidate's block of tied scores.
        positive: Whether each candidate is a positive, bool ``[M]``.
        group: Request number (``0..G-1``) of each candidate, int64 ``[M]``.
        num_candidates: Number of real candidates of each request, int64 ``[G]``.
        ks: The cut-offs.
        block_size: Size of each candidate's block of tied scores (``ties="expected"``: the hit and the gain are
            averaged over the block's positions); None for a single position per candidate.
    """
    device = rank.device
    num_groups = num_candidates.shape[0]
    num_pos = torch.zeros(num_groups, dtype=torch.long, device=device).index_add_(0, group, positive.long())
    eligible = (num_pos > 0) & (num_pos < num_candidates)
    counted = positive & eligible[group]

    k_tensor = torch.tensor(ks, dtype=torch.long, device=device)
    if block_size is None:
        hit = counted.unsqueeze(0) & (rank.unsqueeze(0) < k_tensor.unsqueeze(1))  # [K, M]
        gain = hit.double() / torch.log2(rank.double() + 2.0).unsqueeze(0)  # [K, M]
        hit = hit.double()
    else:
        hit, gain = _expected_hits_and_gains(rank, block_size, counted, k_tensor)

    group_hits = torch.zeros(len(ks), num_groups, dtype=torch.float64, device=device).index_add_(1, group, hit)
    group_dcg = torch.zeros(len(ks), num_groups, dtype=torch.float64, device=device).index_add_(1, group, gain)
    # IDCG@K of a request = sum of the first min(#pos, K) discounts; a cumulative table indexed by that count.
    longest = int(min(max(ks), int(num_pos.max()) if num_groups else 0))
    discounts = 1.0 / torch.log2(torch.arange(longest, dtype=torch.float64, device=device) + 2.0)
    cumulative = torch.cat([discounts.new_zeros(1), discounts.cumsum(0)])
    ideal = cumulative[torch.minimum(num_pos.unsqueeze(0), k_tensor.unsqueeze(1))]  # [K, G]

    safe_ideal = torch.where(eligible, ideal, torch.ones_like(ideal))
    safe_pos = torch.where(eligible, num_pos, torch.ones_like(num_pos)).double()
    zero = torch.zeros((), dtype=torch.float64, device=device)
    return RankingSums(
        hits=hit.sum(1),
        dcg=gain.sum(1),
        num_positives=num_pos[eligible].sum(),
        ndcg_sum=torch.where(eligible, group_dcg / safe_ideal, zero).sum(1),
        recall_sum=torch.where(eligible, group_hits / safe_pos, zero).sum(1),
        num_requests=eligible.sum(),
    )


def _expected_hits_and_gains(start: Tensor, size: Tensor, counted: Tensor, k_tensor: Tensor) -> tuple[Tensor, Tensor]:
    """Mean over the positions ``start .. start + size - 1`` of ``1[j < K]`` and ``1[j < K] / log2(j + 2)``."""
    # Positions past the last block's end are never reached: the table stops there (K may be huge).
    cap = int(torch.minimum(k_tensor.max(), (start + size).max())) if start.numel() else 0
    # cumulative[n] = sum_{j < n} 1 / log2(j + 2), for n up to the largest cut-off.
    discounts = 1.0 / torch.log2(torch.arange(cap, dtype=torch.float64, device=start.device) + 2.0)
    cumulative = torch.cat([discounts.new_zeros(1), discounts.cumsum(0)])
    low = torch.minimum(start.unsqueeze(0), k_tensor.unsqueeze(1))  # [K, M]
    high = torch.minimum((start + size).unsqueeze(0), k_tensor.unsqueeze(1))
    weight = counted.double().unsqueeze(0) / size.double().unsqueeze(0)
    hit = (high - low).double() * weight
    gain = (cumulative[high] - cumulative[low]) * weight
    return hit, gain


def ranking_sums(
    preds: Tensor, target: Tensor, indexes: Tensor, ks: Sequence[int], ties: str = "pessimistic"
) -> RankingSums:
    """Ranking statistics of flat candidate lists grouped by request id.

    Args:
        preds: Score of each candidate, float ``[N]``; higher ranks first. NaN raises.
        target: 0/1 (or bool) label of each candidate, ``[N]``.
        indexes: Request id of each candidate, integer ``[N]``; candidates of a request need not be contiguous.
        ks: Cut-offs ``K``, each a positive integer; a ``K`` larger than a request's list counts every candidate.
        ties: ``pessimistic`` (positives after negatives among equal scores) or ``expected`` (the mean over
            all orderings of tied candidates).

    Returns:
        The additive statistics of every counted request (see the module docstring for the rules).

    Raises:
        ValueError: On shape mismatch, non-float ``preds``, NaN scores, non-0/1 labels, non-integer ids or an
            unknown ``ties``.
    """
    ks = _check_ks(ks)
    _check_ties(ties)
    if preds.dim() != 1 or preds.shape != target.shape or preds.shape != indexes.shape:
        raise ValueError(
            f"preds, target and indexes must be 1-D of equal length; got {tuple(preds.shape)}, "
            f"{tuple(target.shape)}, {tuple(indexes.shape)}"
        )
    if indexes.is_floating_point() or indexes.dtype == torch.bool:
        raise ValueError(f"indexes must hold integer request ids, got dtype {indexes.dtype}")
    _check_preds(preds, None)
    positive = _binary_labels(target, None)
    device = preds.device
    if preds.numel() == 0:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return _sums_from_ranks(empty, empty.bool(), empty, empty, ks)

    # Successive stable sorts, least significant key first: label (negatives first: pessimistic ties), score
    # (descending), request id. The result orders by (request, -score, label, input position).
    order = torch.argsort(positive.to(torch.uint8), stable=True)
    order = order[torch.argsort(preds[order], descending=True, stable=True)]
    order = order[torch.argsort(indexes[order], stable=True)]

    _, counts = torch.unique_consecutive(indexes[order], return_counts=True)
    group = torch.repeat_interleave(torch.arange(counts.shape[0], device=device), counts)
    starts = counts.cumsum(0) - counts
    rank = torch.arange(preds.shape[0], device=device) - starts[group]
    if ties == "expected":
        start, size = _tie_blocks(rank, group, preds[order])
        return _sums_from_ranks(start, positive[order], group, counts, ks, size)
    return _sums_from_ranks(rank, positive[order], group, counts, ks)


def ranking_sums_padded(
    preds: Tensor, target: Tensor, mask: Tensor, ks: Sequence[int], ties: str = "pessimistic"
) -> RankingSums:
    """Ranking statistics of padded candidate lists, one request per row.

    Args:
        preds: Scores, float ``[B, C]``; values under ``mask == False`` are ignored (they may be anything,
            NaN included).
        target: 0/1 (or bool) labels, ``[B, C]``; ignored under padding.
        mask: Boolean ``[B, C]``, ``True`` on real candidates.
        ks: Cut-offs ``K``, each a positive integer.
        ties: ``pessimistic`` or ``expected`` (see :func:`ranking_sums`).

    Returns:
        The additive statistics of every counted row (see the module docstring for the rules).

    Raises:
        ValueError: On shape mismatch, a non-bool mask, non-float ``preds``, NaN scores or non-0/1 labels on
            real candidates, or an unknown ``ties``.
    """
    ks = _check_ks(ks)
    _check_ties(ties)
    if preds.dim() != 2 or preds.shape != target.shape or preds.shape != mask.shape:
        raise ValueError(
            f"preds, target and mask must all be [B, C]; got {tuple(preds.shape)}, {tuple(target.shape)}, "
            f"{tuple(mask.shape)}"
        )
    if mask.dtype != torch.bool:
        raise ValueError(f"mask must be a bool tensor, got dtype {mask.dtype}")
    _check_preds(preds, mask)
    positive = _binary_labels(target, mask) & mask
    scores = preds.masked_fill(~mask, 0.0)

    # Stable sorts per row, least significant key first: label, score (descending), realness (real first).
    order = torch.argsort(positive.to(torch.uint8), dim=1, stable=True)
    order = order.gather(1, torch.argsort(scores.gather(1, order), dim=1, descending=True, stable=True))
    order = order.gather(1, torch.argsort(mask.gather(1, order).to(torch.uint8), dim=1, descending=True, stable=True))

    real = mask.gather(1, order)
    rows, width = preds.shape
    rank = torch.arange(width, device=preds.device).expand(rows, width)[real]
    group = torch.arange(rows, device=preds.device).unsqueeze(1).expand(rows, width)[real]
    if ties == "expected":
        start, size = _tie_blocks(rank, group, scores.gather(1, order)[real])
        return _sums_from_ranks(start, positive.gather(1, order)[real], group, mask.sum(1), ks, size)
    return _sums_from_ranks(rank, positive.gather(1, order)[real], group, mask.sum(1), ks)


def _ratio(numerator: Tensor, denominator: Tensor) -> Tensor:
    """``numerator / denominator``; NaN when the denominator is 0 (the metric is undefined)."""
    dtype = torch.get_default_dtype()
    if int(denominator) == 0:
        return torch.full((), float("nan"), dtype=dtype, device=numerator.device)
    return (numerator / denominator).to(dtype)


_METRIC_RATIOS: dict[str, tuple[str, str]] = {
    "recflow_recall": ("hits", "num_positives"),
    "recflow_ndcg": ("dcg", "num_positives"),
    "normalized_ndcg": ("ndcg_sum", "num_requests"),
    "normalized_recall": ("recall_sum", "num_requests"),
}
"""The :class:`RankingSums` fields whose ratio is each metric: summed term, then what it is averaged over."""


def _metric_at_k(sums: RankingSums, metric: str) -> Tensor:
    """``metric`` (a key of :data:`_METRIC_RATIOS`) at the single cut-off of ``sums``; NaN when nothing counts."""
    numerator, denominator = _METRIC_RATIOS[metric]
    return _ratio(getattr(sums, numerator)[0], getattr(sums, denominator))


def recflow_recall(preds: Tensor, target: Tensor, indexes: Tensor, k: int) -> Tensor:
    """RecFlow Recall@K: hits in the top ``k`` over all positives of counted requests (micro-average).

    ``sum_{requests} sum_{pos} 1[rank < k] / sum_{requests} #pos`` over requests with ``0 < #pos < #candidates``,
    in ``[0, 1]``; pessimistic ties. Arguments as in :func:`ranking_sums`, with the single cut-off ``k``.
    """
    return _metric_at_k(ranking_sums(preds, target, indexes, [k]), "recflow_recall")


def recflow_ndcg(preds: Tensor, target: Tensor, indexes: Tensor, k: int) -> Tensor:
    """RecFlow "NDCG"@K: the mean DCG gain per positive, **without IDCG normalisation**.

    ``sum_{requests} sum_{pos} 1[rank < k] / log2(rank + 2) / sum_{requests} #pos`` over requests with
    ``0 < #pos < #candidates``, in ``[0, 1]``; pessimistic ties. This is what the RecFlow paper reports as NDCG;
    for the textbook metric use :func:`normalized_ndcg`. Arguments as in :func:`ranking_sums`, with one ``k``.
    """
    return _metric_at_k(ranking_sums(preds, target, indexes, [k]), "recflow_ndcg")


def normalized_ndcg(preds: Tensor, target: Tensor, indexes: Tensor, k: int) -> Tensor:
    """Standard NDCG@K with binary gains, averaged over counted requests.

    ``mean_requests DCG@k / IDCG@k`` over requests with ``0 < #pos < #candidates`` (NaN when none). Arguments as
    in :func:`ranking_sums`, with the single cut-off ``k``.
    """
    return _metric_at_k(ranking_sums(preds, target, indexes, [k]), "normalized_ndcg")


def normalized_recall(preds: Tensor, target: Tensor, indexes: Tensor, k: int) -> Tensor:
    """Standard Recall@K, averaged over counted requests (the torchmetrics ``RetrievalRecall`` definition).

    ``mean_requests (#pos in the top k) / #pos`` over requests with ``0 < #pos < #candidates``. Arguments as in
    :func:`ranking_sums`, with the single cut-off ``k``.
    """
    return _metric_at_k(ranking_sums(preds, target, indexes, [k]), "normalized_recall")


def recflow_recall_padded(preds: Tensor, target: Tensor, mask: Tensor, k: int) -> Tensor:
    """RecFlow Recall@K of padded lists, one request per row (see :func:`recflow_recall`).

    Arguments as in :func:`ranking_sums_padded`, with the single cut-off ``k``.
    """
    return _metric_at_k(ranking_sums_padded(preds, target, mask, [k]), "recflow_recall")


def recflow_ndcg_padded(preds: Tensor, target: Tensor, mask: Tensor, k: int) -> Tensor:
    """RecFlow DCG-per-positive ("NDCG")@K of padded lists (see :func:`recflow_ndcg`).

    Arguments as in :func:`ranking_sums_padded`, with the single cut-off ``k``.
    """
    return _metric_at_k(ranking_sums_padded(preds, target, mask, [k]), "recflow_ndcg")


def normalized_ndcg_padded(preds: Tensor, target: Tensor, mask: Tensor, k: int) -> Tensor:
    """Standard NDCG@K of padded lists, averaged over counted rows (see :func:`normalized_ndcg`).

    Arguments as in :func:`ranking_sums_padded`, with the single cut-off ``k``.
    """
    return _metric_at_k(ranking_sums_padded(preds, target, mask, [k]), "normalized_ndcg")


def normalized_recall_padded(preds: Tensor, target: Tensor, mask: Tensor, k: int) -> Tensor:
    """Standard Recall@K of padded lists, averaged over counted rows (see :func:`normalized_recall`).

    Arguments as in :func:`ranking_sums_padded`, with the single cut-off ``k``.
    """
    return _metric_at_k(ranking_sums_padded(preds, target, mask, [k]), "normalized_recall")


def log_loss_sums(preds: Tensor, target: Tensor, eps: float | None = None) -> tuple[Tensor, Tensor]:
    """Summed binary cross-entropy of probabilities, clipped like scikit-learn's ``log_loss``.

    Args:
        preds: Predicted probabilities in ``[0, 1]``, float ``[N]``.
        target: 0/1 labels, ``[N]``.
        eps: Probabilities are clipped to ``[eps, 1 - eps]``; ``None`` uses the machine epsilon of ``preds``'
            dtype, as scikit-learn does (``eps="auto"``).

    Returns:
        ``(sum of -y log p - (1 - y) log(1 - p)`` in float64, number of samples``)``.

    Raises:
        ValueError: On shape mismatch, probabilities outside ``[0, 1]`` (logits passed by mistake), NaN, or
            labels other than 0/1.
    """
    if preds.shape != target.shape:
        raise ValueError(f"preds and target must have the same shape; got {tuple(preds.shape)}, {tuple(target.shape)}")
    if not preds.is_floating_point():
        raise ValueError(f"preds must be floating-point probabilities, got dtype {preds.dtype}")
    if torch.isnan(preds).any() or ((preds < 0) | (preds > 1)).any():
        raise ValueError(
            "preds must be probabilities in [0, 1] (apply a sigmoid to logits first); found NaN or out of range"
        )
    labels = _binary_labels(target, None).double()
    eps = torch.finfo(preds.dtype).eps if eps is None else eps
    prob = preds.double().clamp(eps, 1.0 - eps)
    losses = -(labels * torch.log(prob) + (1.0 - labels) * torch.log1p(-prob))
    return losses.sum(), torch.tensor(preds.numel(), dtype=torch.long, device=preds.device)


def binary_log_loss(preds: Tensor, target: Tensor, eps: float | None = None) -> Tensor:
    """Mean binary cross-entropy of probabilities (LogLoss), clipped like scikit-learn's ``log_loss``.

    Args:
        preds: Predicted probabilities in ``[0, 1]``, float ``[N]``.
        target: 0/1 labels, ``[N]``.
        eps: Clipping bound, see :func:`log_loss_sums`.

    Returns:
        A scalar tensor (NaN for empty input: the mean of nothing is undefined).
    """
    total, count = log_loss_sums(preds, target, eps)
    return _ratio(total, count)
