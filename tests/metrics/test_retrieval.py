"""Tests of stcrank.metrics.retrieval: chunked top-K against brute force, and RecFlow retrieval metrics."""

from __future__ import annotations

import math

import pytest
import torch

from stcrank.metrics.retrieval import retrieval_ndcg, retrieval_recall, retrieval_sums, topk_over_corpus


def brute_force(queries: torch.Tensor, corpus: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Full ranking: stable descending sort of the whole score matrix (ties by lower corpus row)."""
    scores, order = torch.sort(queries @ corpus.T, dim=1, descending=True, stable=True)
    return scores[:, :k], order[:, :k]


@pytest.mark.parametrize("chunk_size", [1, 7, 64, 1000])
@pytest.mark.parametrize("k", [1, 10, 100, 300])
def test_matches_brute_force_with_many_ties(chunk_size, k):
    gen = torch.Generator().manual_seed(0)
    # Small integer vectors: scores are exact integers with many ties across chunk boundaries.
    queries = torch.randint(-2, 3, (6, 4), generator=gen).float()
    corpus = torch.randint(-2, 3, (300, 4), generator=gen).float()
    scores, indices = topk_over_corpus(queries, corpus, k, chunk_size=chunk_size)
    want_scores, want_indices = brute_force(queries, corpus, k)
    assert torch.equal(scores, want_scores)
    assert torch.equal(indices, want_indices)


def test_independent_of_chunk_size_with_float_scores():
    gen = torch.Generator().manual_seed(1)
    queries = torch.randn(5, 8, generator=gen)
    corpus = torch.randn(2000, 8, generator=gen)
    reference = topk_over_corpus(queries, corpus, 50, chunk_size=2000)[1]
    for chunk_size in (3, 40, 333):
        assert torch.equal(topk_over_corpus(queries, corpus, 50, chunk_size=chunk_size)[1], reference)
    # k larger than a chunk: the running list is built from several chunks.
    _, want = brute_force(queries, corpus, 500)
    assert torch.equal(topk_over_corpus(queries, corpus, 500, chunk_size=64)[1], want)


def test_all_equal_scores_return_lowest_rows():
    queries = torch.ones(2, 3)
    corpus = torch.ones(10, 3)
    scores, indices = topk_over_corpus(queries, corpus, 4, chunk_size=3)
    assert indices.tolist() == [[0, 1, 2, 3], [0, 1, 2, 3]]
    assert torch.all(scores == 3.0)


def test_exclude_rows_for_every_query_and_per_query():
    # Corpus row r has score r for the single query: the top 3 are 9, 8, 7.
    corpus = torch.arange(10, dtype=torch.float32).unsqueeze(1)
    queries = torch.ones(2, 1)
    common = torch.zeros(10, dtype=torch.bool)
    common[9] = True
    _, indices = topk_over_corpus(queries, corpus, 3, chunk_size=4, exclude=common)
    assert indices.tolist() == [[8, 7, 6], [8, 7, 6]]
    per_query = torch.tensor([[8, -1], [0, 7]])  # -1 is padding
    _, indices = topk_over_corpus(queries, corpus, 3, chunk_size=4, exclude=per_query)
    assert indices.tolist() == [[9, 7, 6], [9, 8, 6]]


def test_exclusions_leaving_fewer_than_k_rows_mark_empty_slots():
    corpus = torch.arange(5, dtype=torch.float32).unsqueeze(1)
    queries = torch.ones(1, 1)
    exclude = torch.tensor([True, True, True, False, True])
    scores, indices = topk_over_corpus(queries, corpus, 3, chunk_size=2, exclude=exclude)
    assert indices.tolist() == [[3, -1, -1]]
    assert scores[0, 0].item() == 3.0
    assert torch.isneginf(scores[0, 1:]).all()


def test_bad_inputs_raise():
    corpus = torch.randn(5, 2)
    with pytest.raises(ValueError, match="k must be"):
        topk_over_corpus(torch.randn(1, 2), corpus, 6)
    with pytest.raises(ValueError, match="same d"):
        topk_over_corpus(torch.randn(1, 3), corpus, 2)
    with pytest.raises(ValueError, match="finite"):
        topk_over_corpus(torch.tensor([[float("nan"), 0.0]]), corpus, 2)
    with pytest.raises(ValueError, match="chunk_size"):
        topk_over_corpus(torch.randn(1, 2), corpus, 2, chunk_size=0)
    with pytest.raises(ValueError, match="shape"):
        topk_over_corpus(torch.randn(1, 2), corpus, 2, exclude=torch.zeros(4, dtype=torch.bool))


def hand_lists():
    topk = torch.tensor([[5, 3, 9, 1], [2, 4, 6, 8]])
    # Request 0: 3 at rank 1, 1 at rank 3, 7 missed. Request 1: 8 at rank 3; masked entries (2 is at rank 0) ignored.
    positives = torch.tensor([[3, 1, 7], [8, 2, 2]])
    positive_mask = torch.tensor([[True, True, True], [True, False, False]])
    return topk, positives, positive_mask


def test_retrieval_metrics_hand_values():
    topk, positives, positive_mask = hand_lists()
    # 4 positives: hits within rank < 2: one (rank 1); within rank < 4: three.
    assert retrieval_recall(topk, positives, positive_mask, 2).item() == pytest.approx(1 / 4)
    assert retrieval_recall(topk, positives, positive_mask, 4).item() == pytest.approx(3 / 4)
    # NDCG@2 = (1/log2(3)) / 4 = 0.157732; NDCG@4 = (1/log2(3) + 2/log2(5)) / 4 = 0.373071 (no IDCG).
    assert retrieval_ndcg(topk, positives, positive_mask, 2).item() == pytest.approx(0.1577324384, abs=1e-6)
    assert retrieval_ndcg(topk, positives, positive_mask, 4).item() == pytest.approx(0.3730707174, abs=1e-6)
    hits, dcg, count = retrieval_sums(topk, positives, positive_mask, [1, 2, 4])
    assert hits.tolist() == [0.0, 1.0, 3.0]
    assert count.item() == 4
    assert dcg[2].item() == pytest.approx(1 / math.log2(3) + 2 / math.log2(5))


def test_duplicate_positives_count_twice_and_empty_slots_never_match():
    topk = torch.tensor([[4, -1, -1]])
    positives = torch.tensor([[4, 4, -1]])
    mask = torch.tensor([[True, True, True]])
    # Two listed copies of 4 (both hits at rank 0) and a -1 positive that must not match the empty slots.
    assert retrieval_recall(topk, positives, mask, 3).item() == pytest.approx(2 / 3)


def test_retrieval_metrics_match_brute_force_ranks():
    gen = torch.Generator().manual_seed(3)
    queries, corpus = torch.randn(8, 4, generator=gen), torch.randn(500, 4, generator=gen)
    _, topk = topk_over_corpus(queries, corpus, 100, chunk_size=77)
    positives = torch.randint(0, 500, (8, 5), generator=gen)
    mask = torch.rand(8, 5, generator=gen) < 0.7
    full_rank = torch.argsort(torch.argsort(queries @ corpus.T, dim=1, descending=True, stable=True), dim=1)
    ranks = full_rank.gather(1, positives)[mask]
    for k in (10, 100):
        assert retrieval_recall(topk, positives, mask, k).item() == pytest.approx((ranks < k).float().mean().item())
        gains = torch.where(ranks < k, 1.0 / torch.log2(ranks.double() + 2), 0.0)
        assert retrieval_ndcg(topk, positives, mask, k).item() == pytest.approx(gains.mean().item(), abs=1e-6)


def test_no_positive_and_bad_cutoff():
    topk = torch.tensor([[1, 2]])
    none = torch.zeros(1, 1, dtype=torch.bool)
    assert math.isnan(retrieval_recall(topk, torch.tensor([[1]]), none, 2).item())  # undefined, not 0
    with pytest.raises(ValueError, match="exceeds"):
        retrieval_recall(topk, torch.tensor([[1]]), ~none, 3)
