"""Exact full-corpus top-K retrieval by inner product, and RecFlow's retrieval Recall/NDCG.

:func:`topk_over_corpus` scores the corpus chunk by chunk and keeps a running top-K per query, so memory stays at
``B x (K + chunk_size)`` and the full ``B x N`` score matrix is never built. Ties are broken deterministically
by the lower corpus row, the same rule as a stable descending sort of the full score matrix, so the result is
identical to a brute-force ranking whatever the chunk size.

:func:`retrieval_recall` and :func:`retrieval_ndcg` are the RecFlow retrieval metrics: for every positive of a
request, ``rank`` is its 0-based position in the retrieved list (a miss when absent), and

* ``Recall@K = sum_{requests} sum_{pos} 1[rank < K] / sum_{requests} #pos`` (micro over positives);
* ``NDCG@K = sum_{requests} sum_{pos} 1[rank < K] / log2(rank + 2) / sum_{requests} #pos`` (no IDCG: the mean DCG
  gain per positive, reported as NDCG in the RecFlow paper).

A positive listed twice in a request counts twice, as in the reference evaluation.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["retrieval_ndcg", "retrieval_recall", "retrieval_sums", "topk_over_corpus"]


def _exclusion_mask(exclude: Tensor, queries: int, start: int, stop: int) -> Tensor:
    """Bool mask of the excluded rows of corpus chunk ``[start, stop)``: ``[1, c]`` or ``[B, c]``."""
    if exclude.dtype == torch.bool:
        return exclude[start:stop].unsqueeze(0)
    width = stop - start
    local = exclude - start
    inside = (local >= 0) & (local < width)
    mask = torch.zeros(queries, width + 1, dtype=torch.bool, device=exclude.device)
    # Rows outside the chunk (and negative padding ids) are written to a spare last column, then dropped.
    mask.scatter_(1, torch.where(inside, local, width), True)
    return mask[:, :width]


def _select_topk(scores: Tensor, k: int) -> Tensor:
    """Positions of the top ``k`` of each row by (score descending, position ascending), in position order.

    ``torch.topk`` is exact on values but leaves the choice among ties at the cut arbitrary; the tied
    candidates at the k-th value are taken by lowest position here, which makes the selection deterministic.
    """
    rows, width = scores.shape
    kth = scores.topk(k, dim=1, sorted=False).values.amin(dim=1, keepdim=True)
    above = scores > kth
    tied = scores == kth
    needed = k - above.sum(dim=1, keepdim=True)
    chosen = above | (tied & (tied.cumsum(dim=1) <= needed))
    slot = chosen.cumsum(dim=1) - 1
    # Exactly k chosen per row: scatter each chosen position into its slot; the others go to a spare column.
    out = torch.zeros(rows, k + 1, dtype=torch.long, device=scores.device)
    positions = torch.arange(width, device=scores.device).expand(rows, width)
    out.scatter_(1, torch.where(chosen, slot, k), positions)
    return out[:, :k]


def _chunk_topk(scores: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Top ``k`` of each row of a chunk, ties at the cut resolved by lowest position.

    ``torch.topk`` is fast but arbitrary among ties; a tie can only change the selected set when the
    ``(k+1)``-th largest value equals the ``k``-th, so only those (rare) rows go through the exact selection.
    """
    rows, width = scores.shape
    if width <= k:
        return scores, torch.arange(width, device=scores.device).expand(rows, width)
    values, positions = scores.topk(k + 1, dim=1)
    tied = values[:, k] == values[:, k - 1]
    values, positions = values[:, :k], positions[:, :k]
    if bool(tied.any()):
        tied_rows = tied.nonzero().squeeze(1)
        exact = _select_topk(scores[tied_rows], k)
        positions = positions.index_put((tied_rows,), exact)
        values = values.index_put((tied_rows,), scores[tied_rows].gather(1, exact))
    return values, positions


def topk_over_corpus(
    queries: Tensor, corpus: Tensor, k: int, chunk_size: int = 65536, exclude: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Exact top-``k`` corpus rows by inner product with each query, computed chunk by chunk.

    Args:
        queries: Query vectors, float ``[B, d]``.
        corpus: Item vectors, float ``[N, d]`` (queries are cast to its dtype and device).
        k: Number of rows to return, ``1 <= k <= N``.
        chunk_size: Corpus rows scored at a time; memory is ``O(B x (k + chunk_size))``.
        exclude: Rows never to return: either bool ``[N]`` (the same rows for every query, e.g. a padding row)
            or long ``[B, E]`` of row ids per query (entries ``< 0`` are ignored).

    Returns:
        ``(scores, indices)``, both ``[B, k]``, best first; equal scores are ordered by lower corpus row.
        When exclusions leave fewer than ``k`` rows, the missing slots hold score ``-inf`` and index ``-1``.

    Raises:
        ValueError: On bad shapes, ``k`` out of range, a non-positive ``chunk_size`` or non-finite vectors.
    """
    if queries.dim() != 2 or corpus.dim() != 2 or queries.shape[1] != corpus.shape[1]:
        raise ValueError(
            f"queries must be [B, d] and corpus [N, d] with the same d; got {tuple(queries.shape)} and "
            f"{tuple(corpus.shape)}"
        )
    num_items = corpus.shape[0]
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= num_items:
        raise ValueError(f"k must be an integer in [1, N={num_items}], got {k!r}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    if not torch.isfinite(queries).all() or not torch.isfinite(corpus).all():
        raise ValueError("queries and corpus must be finite (found NaN or inf)")
    if exclude is not None:
        if exclude.dtype == torch.bool:
            if exclude.shape != (num_items,):
                raise ValueError(f"a bool exclude must have shape [N={num_items}], got {tuple(exclude.shape)}")
        elif exclude.dim() != 2 or exclude.shape[0] != queries.shape[0] or exclude.is_floating_point():
            raise ValueError(f"an index exclude must be long [B, E], got {exclude.dtype} {tuple(exclude.shape)}")
        exclude = exclude.to(corpus.device)

    queries = queries.to(device=corpus.device, dtype=corpus.dtype)
    rows = queries.shape[0]
    best_scores = torch.full((rows, k), float("-inf"), dtype=corpus.dtype, device=corpus.device)
    best_index = torch.full((rows, k), -1, dtype=torch.long, device=corpus.device)
    for start in range(0, num_items, chunk_size):
        stop = min(start + chunk_size, num_items)
        chunk_scores = queries @ corpus[start:stop].T
        if exclude is not None:
            chunk_scores = chunk_scores.masked_fill(_exclusion_mask(exclude, rows, start, stop), float("-inf"))
        candidate_scores, candidate_index = _chunk_topk(chunk_scores, k)
        # Merge with the running best: order the union by (score descending, row ascending), keep k.
        pool_scores = torch.cat([best_scores, candidate_scores], dim=1)
        pool_index = torch.cat([best_index, candidate_index + start], dim=1)
        by_row = torch.argsort(pool_index, dim=1)
        pool_scores, pool_index = pool_scores.gather(1, by_row), pool_index.gather(1, by_row)
        by_score = torch.argsort(pool_scores, dim=1, descending=True, stable=True)[:, :k]
        best_scores, best_index = pool_scores.gather(1, by_score), pool_index.gather(1, by_score)
    best_index = best_index.masked_fill(torch.isneginf(best_scores), -1)
    return best_scores, best_index


def retrieval_sums(
    topk_indices: Tensor, positives: Tensor, positive_mask: Tensor, ks: Sequence[int]
) -> tuple[Tensor, Tensor, Tensor]:
    """Additive statistics of RecFlow's retrieval Recall/NDCG.

    Args:
        topk_indices: Retrieved corpus rows per request, best first, long ``[B, K']`` with ``K' >= max(ks)``
            (``-1`` marks an empty slot).
        positives: Corpus row of each positive, long ``[B, P]``.
        positive_mask: Bool ``[B, P]``, ``True`` on real positives.
        ks: Cut-offs, positive integers.

    Returns:
        ``(hits, dcg, num_positives)``: float64 ``[len(ks)]`` sums of ``1[rank < K]`` and
        ``1[rank < K] / log2(rank + 2)`` over real positives, and their int64 count.

    Raises:
        ValueError: On bad shapes, dtypes or a cut-off above ``K'``.
    """
    ks = list(ks)
    if not ks or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in ks):
        raise ValueError(f"ks must be positive integers, got {ks!r}")
    if topk_indices.dim() != 2 or positives.dim() != 2 or positives.shape != positive_mask.shape:
        raise ValueError(
            f"topk_indices must be [B, K'] and positives/positive_mask [B, P]; got {tuple(topk_indices.shape)}, "
            f"{tuple(positives.shape)}, {tuple(positive_mask.shape)}"
        )
    if topk_indices.shape[0] != positives.shape[0]:
        raise ValueError(f"batch sizes differ: {topk_indices.shape[0]} retrieved lists, {positives.shape[0]} rows")
    if positive_mask.dtype != torch.bool or topk_indices.is_floating_point() or positives.is_floating_point():
        raise ValueError("topk_indices and positives must be integer ids and positive_mask a bool tensor")
    longest = max(ks)
    if longest > topk_indices.shape[1]:
        raise ValueError(f"cut-off {longest} exceeds the {topk_indices.shape[1]} retrieved items per request")

    retrieved = topk_indices[:, :longest].long()
    # Locate each positive in its request's list: sort the list once, binary-search every positive.
    sorted_ids, position = retrieved.sort(dim=1)
    targets = positives.long()
    slot = torch.searchsorted(sorted_ids, targets).clamp(max=longest - 1)
    found = (sorted_ids.gather(1, slot) == targets) & positive_mask & (targets >= 0)
    rank = position.gather(1, slot)

    k_tensor = torch.tensor(ks, dtype=torch.long, device=retrieved.device).view(-1, 1, 1)
    hit = found.unsqueeze(0) & (rank.unsqueeze(0) < k_tensor)  # [K, B, P]
    gain = hit.double() / torch.log2(rank.double() + 2.0).unsqueeze(0)
    return hit.double().sum(dim=(1, 2)), gain.sum(dim=(1, 2)), positive_mask.sum()


def retrieval_recall(topk_indices: Tensor, positives: Tensor, positive_mask: Tensor, k: int) -> Tensor:
    """RecFlow retrieval Recall@K: positives found in the top ``k`` over all positives (micro-average).

    Args:
        topk_indices: Retrieved corpus rows, best first, long ``[B, K']`` with ``K' >= k``.
        positives: Corpus row of each positive, long ``[B, P]``.
        positive_mask: Bool ``[B, P]``, ``True`` on real positives.
        k: Cut-off.

    Returns:
        A scalar tensor (NaN when there is no positive: the metric is undefined).
    """
    hits, _, count = retrieval_sums(topk_indices, positives, positive_mask, [k])
    return _per_positive(hits[0], count)


def retrieval_ndcg(topk_indices: Tensor, positives: Tensor, positive_mask: Tensor, k: int) -> Tensor:
    """RecFlow retrieval NDCG@K: the mean DCG gain per positive, without IDCG normalisation.

    Arguments and result as in :func:`retrieval_recall`.
    """
    _, dcg, count = retrieval_sums(topk_indices, positives, positive_mask, [k])
    return _per_positive(dcg[0], count)


def _per_positive(total: Tensor, count: Tensor) -> Tensor:
    """``total / count`` as float32; NaN when there is no positive (the metric is undefined)."""
    return (total / count).float() if int(count) else total.new_full((), float("nan"), dtype=torch.float32)
