"""Property-based checks of stcrank.metrics.retrieval: chunked top-K against a brute-force sort, and the metrics.

Vectors hold small integers, so every inner product is exact in float32 and ties are frequent: the chunked
search must then reproduce a stable descending sort of the full score matrix exactly, whatever the chunk size.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stcrank.metrics.ranking import CorpusRetrievalMetrics
from stcrank.metrics.retrieval import retrieval_ndcg, retrieval_recall, retrieval_sums, topk_over_corpus

PROPS = settings(max_examples=30, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


def int_matrix(rows: int, cols: int):
    return st.lists(st.lists(st.integers(-2, 2), min_size=cols, max_size=cols), min_size=rows, max_size=rows).map(
        lambda x: torch.tensor(x, dtype=torch.float32).reshape(rows, cols)
    )


@st.composite
def retrieval_case(draw):
    dim = draw(st.integers(1, 3))
    num_items = draw(st.integers(1, 25))
    queries = draw(int_matrix(draw(st.integers(1, 4)), dim))
    corpus = draw(int_matrix(num_items, dim))
    k = draw(st.integers(1, num_items))
    chunk = draw(st.integers(1, num_items + 3))
    return queries, corpus, k, chunk


def brute_topk(queries, corpus, k, excluded=None):
    """Stable descending sort of the full float64 score matrix (lower row first on ties), cut to ``k``."""
    scores = queries.double().numpy() @ corpus.double().numpy().T
    if excluded is not None:
        scores[excluded] = -np.inf
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    best = np.take_along_axis(scores, order, axis=1)
    return best, np.where(np.isneginf(best), -1, order)


@PROPS
@given(retrieval_case())
def test_chunked_topk_equals_a_stable_full_sort(case):
    queries, corpus, k, chunk = case
    scores, index = topk_over_corpus(queries, corpus, k, chunk_size=chunk)
    best, order = brute_topk(queries, corpus, k)
    assert np.array_equal(index.numpy(), order)
    assert np.array_equal(scores.double().numpy(), best)


@PROPS
@given(retrieval_case(), st.data())
def test_exclusions_by_mask_and_by_id_match_the_reference(case, data):
    queries, corpus, k, chunk = case
    rows, num_items = queries.shape[0], corpus.shape[0]
    shared = torch.tensor(data.draw(st.lists(st.booleans(), min_size=num_items, max_size=num_items)))
    excluded = np.broadcast_to(shared.numpy(), (rows, num_items))
    scores, index = topk_over_corpus(queries, corpus, k, chunk_size=chunk, exclude=shared)
    best, order = brute_topk(queries, corpus, k, excluded)
    assert np.array_equal(index.numpy(), order) and np.array_equal(scores.double().numpy(), best)
    # Per-query ids, padded with negatives and holding ids far beyond the corpus (2**62): those are ignored.
    junk = st.sampled_from([-1, -(2**62), num_items, 2**62])
    ids = data.draw(
        st.lists(st.lists(st.one_of(st.integers(0, num_items - 1), junk), max_size=5), min_size=rows, max_size=rows)
    )
    width = max(len(r) for r in ids)
    padded = torch.tensor([r + [-1] * (width - len(r)) for r in ids], dtype=torch.long).reshape(rows, width)
    mask = np.zeros((rows, num_items), dtype=bool)
    for row, r in enumerate(ids):
        mask[row, [i for i in r if 0 <= i < num_items]] = True
    scores, index = topk_over_corpus(queries, corpus, k, chunk_size=chunk, exclude=padded)
    best, order = brute_topk(queries, corpus, k, mask)
    assert np.array_equal(index.numpy(), order) and np.array_equal(scores.double().numpy(), best)


def test_topk_rejects_k_out_of_range_and_non_finite_vectors():
    queries, corpus = torch.ones(2, 3), torch.ones(5, 3)
    for k in (0, 6, 2.0, True):
        with pytest.raises(ValueError, match="k must be an integer"):
            topk_over_corpus(queries, corpus, k)
    for bad in (float("nan"), float("inf")):
        spoilt = corpus.clone()
        spoilt[3, 1] = bad
        with pytest.raises(ValueError, match="finite"):
            topk_over_corpus(queries, spoilt, 2)
        with pytest.raises(ValueError, match="finite"):
            topk_over_corpus(queries.masked_fill(queries > 0, bad), corpus, 2)
    with pytest.raises(ValueError, match="same d"):
        topk_over_corpus(torch.ones(2, 4), corpus, 2)
    with pytest.raises(ValueError, match="exclude"):
        topk_over_corpus(queries, corpus, 2, exclude=torch.zeros(4, dtype=torch.bool))


# --- Recall / NDCG over a retrieved list -----------------------------------------------------------------------

HUGE = st.one_of(st.integers(0, 50), st.integers(2**62 - 20, 2**62))


@st.composite
def retrieved_lists(draw):
    """Retrieved lists (distinct ids, -1 empty slots) and positives, with ids up to 2**62."""
    rows, width = draw(st.integers(1, 4)), draw(st.integers(1, 8))
    lists, positives = [], []
    for _ in range(rows):
        ids = draw(st.lists(HUGE, min_size=width, max_size=width, unique=True))
        empty = draw(st.integers(0, width - 1))
        lists.append(ids[: width - empty] + [-1] * empty)
        pool = st.one_of(st.sampled_from(ids), HUGE)
        positives.append(draw(st.lists(pool, max_size=5)))
    longest = max([len(p) for p in positives] + [1])
    pos = torch.tensor([p + [0] * (longest - len(p)) for p in positives], dtype=torch.long)
    mask = torch.tensor([[i < len(p) for i in range(longest)] for p in positives])
    return torch.tensor(lists, dtype=torch.long), pos, mask


def reference_sums(lists, positives, mask, k):
    hits = dcg = 0.0
    for row in range(lists.shape[0]):
        ranked = lists[row].tolist()
        for pos, real in zip(positives[row].tolist(), mask[row].tolist(), strict=True):
            if real and pos in ranked[:k]:
                rank = ranked.index(pos)
                hits += 1
                dcg += 1 / math.log2(rank + 2)
    return hits, dcg, int(mask.sum())


@PROPS
@given(retrieved_lists(), st.integers(1, 8))
def test_retrieval_metrics_match_the_reference_even_with_huge_ids(case, k):
    lists, positives, mask = case
    k = min(k, lists.shape[1])
    hits, dcg, count = reference_sums(lists, positives, mask, k)
    got_hits, got_dcg, got_count = retrieval_sums(lists, positives, mask, [k])
    assert got_hits.item() == hits and got_dcg.item() == pytest.approx(dcg) and int(got_count) == count
    recall = retrieval_recall(lists, positives, mask, k).item()
    ndcg = retrieval_ndcg(lists, positives, mask, k).item()
    # NaN when there is no positive: the metric is undefined
    assert recall == pytest.approx(hits / count if count else math.nan, nan_ok=True)
    assert ndcg == pytest.approx(dcg / count if count else math.nan, nan_ok=True)
    assert not count or (0 <= recall <= 1 and 0 <= ndcg <= 1)
    # Monotone in K, and the order of the positives within a request does not matter.
    sums = retrieval_sums(lists, positives, mask, list(range(1, lists.shape[1] + 1)))
    assert (torch.diff(sums[0]) >= 0).all() and (torch.diff(sums[1]) >= 0).all()
    flipped = retrieval_sums(lists, positives.flip(1), mask.flip(1), [k])
    assert flipped[0].item() == hits and flipped[1].item() == pytest.approx(dcg)


@PROPS
@given(retrieved_lists(), st.integers(0, 4))
def test_corpus_retrieval_metric_is_exact_over_any_split(case, cut):
    lists, positives, mask = case
    ks = [1, lists.shape[1]]
    metric = CorpusRetrievalMetrics(ks)
    metric.update(lists[:cut], positives[:cut], mask[:cut])
    metric.update(lists[cut:], positives[cut:], mask[cut:])
    out = metric.compute()
    for k in ks:
        recall, ndcg = retrieval_recall(lists, positives, mask, k), retrieval_ndcg(lists, positives, mask, k)
        assert out[f"recall@{k}"].item() == pytest.approx(recall.item(), nan_ok=True)
        assert out[f"ndcg@{k}"].item() == pytest.approx(ndcg.item(), nan_ok=True)


def test_retrieval_metrics_reject_a_cut_off_beyond_the_list_and_bad_dtypes():
    lists, positives, mask = torch.tensor([[3, 1]]), torch.tensor([[1]]), torch.tensor([[True]])
    with pytest.raises(ValueError, match="exceeds the 2 retrieved"):
        retrieval_recall(lists, positives, mask, 3)
    with pytest.raises(ValueError, match="integer ids"):
        retrieval_recall(lists.float(), positives, mask, 1)
    with pytest.raises(ValueError, match="bool"):
        retrieval_recall(lists, positives, mask.long(), 1)
    with pytest.raises(ValueError, match="positive integers"):
        retrieval_recall(lists, positives, mask, 0)
