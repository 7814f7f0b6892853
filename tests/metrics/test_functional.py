"""Hand-computed and reference checks of stcrank.metrics.functional."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torchmetrics.functional.retrieval import retrieval_normalized_dcg, retrieval_recall

from stcrank.metrics.functional import (
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

LOG2_3 = math.log2(3)
LOG2_5 = math.log2(5)


def hand_example() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Five requests, interleaved in the input; only requests 7 and 3 count.

    Request 7: scores .9 .8 .7 .6 .5, labels 1 0 0 1 0 -> positives at ranks 0 and 3.
    Request 3: scores .1 .2 .3 .4 .5, labels 0 1 0 0 0 -> sorted .5 .4 .3 .2 .1, the positive (.2) at rank 3.
    Request 5: all positive (ineligible). Request 9: no positive (ineligible).
    Request 11: a single positive candidate, #pos == #candidates (ineligible).
    """
    rows = [
        (7, 0.9, 1),
        (3, 0.1, 0),
        (5, 0.3, 1),
        (7, 0.8, 0),
        (9, 0.5, 0),
        (3, 0.2, 1),
        (7, 0.7, 0),
        (3, 0.3, 0),
        (5, 0.2, 1),
        (9, 0.4, 0),
        (7, 0.6, 1),
        (3, 0.4, 0),
        (11, 0.9, 1),
        (9, 0.1, 0),
        (7, 0.5, 0),
        (3, 0.5, 0),
    ]
    indexes = torch.tensor([r[0] for r in rows])
    preds = torch.tensor([r[1] for r in rows])
    target = torch.tensor([r[2] for r in rows])
    return preds, target, indexes


def to_padded(preds, target, indexes):
    """One row per request, padded with NaN scores and label 1 (both must be ignored)."""
    ids = sorted(set(indexes.tolist()))
    width = max(int((indexes == i).sum()) for i in ids)
    p = torch.full((len(ids), width), float("nan"))
    t = torch.ones(len(ids), width, dtype=torch.long)
    m = torch.zeros(len(ids), width, dtype=torch.bool)
    for row, i in enumerate(ids):
        sel = indexes == i
        n = int(sel.sum())
        p[row, :n], t[row, :n], m[row, :n] = preds[sel], target[sel], True
    return p, t, m


def test_recflow_recall_hand_values():
    preds, target, indexes = hand_example()
    # 3 positives in counted requests, ranks 0, 3 (request 7) and 3 (request 3).
    assert recflow_recall(preds, target, indexes, 1).item() == pytest.approx(1 / 3)
    assert recflow_recall(preds, target, indexes, 2).item() == pytest.approx(1 / 3)
    assert recflow_recall(preds, target, indexes, 3).item() == pytest.approx(1 / 3)
    assert recflow_recall(preds, target, indexes, 4).item() == pytest.approx(1.0)
    # K larger than every list counts every positive.
    assert recflow_recall(preds, target, indexes, 1000).item() == pytest.approx(1.0)


def test_recflow_ndcg_is_dcg_per_positive_without_idcg():
    preds, target, indexes = hand_example()
    # @2: only the rank-0 positive: 1/log2(2) = 1, over 3 positives.
    assert recflow_ndcg(preds, target, indexes, 2).item() == pytest.approx(1 / 3)
    # @4: (1 + 1/log2(5) + 1/log2(5)) / 3 = 0.620451
    assert recflow_ndcg(preds, target, indexes, 4).item() == pytest.approx(0.6204510387, abs=1e-6)
    assert recflow_ndcg(preds, target, indexes, 4).item() == pytest.approx((1 + 2 / LOG2_5) / 3, abs=1e-6)


def test_normalized_metrics_hand_values():
    preds, target, indexes = hand_example()
    # @2: request 7 DCG = 1, IDCG = 1 + 1/log2(3) -> 0.613147; request 3 -> 0. Mean 0.306574.
    assert normalized_ndcg(preds, target, indexes, 2).item() == pytest.approx(0.3065735964, abs=1e-6)
    # @5: request 7 (1 + 1/log2 5) / (1 + 1/log2 3) = 0.877215; request 3 (1/log2 5) / 1 = 0.430677. Mean 0.653946.
    assert normalized_ndcg(preds, target, indexes, 5).item() == pytest.approx(0.6539459367, abs=1e-6)
    # Recall@2: request 7 -> 1/2, request 3 -> 0; mean 1/4. Recall@4: both 1.
    assert normalized_recall(preds, target, indexes, 2).item() == pytest.approx(0.25)
    assert normalized_recall(preds, target, indexes, 4).item() == pytest.approx(1.0)


def test_ranking_sums_fields():
    preds, target, indexes = hand_example()
    sums = ranking_sums(preds, target, indexes, [1, 4])
    assert sums.num_requests.item() == 2
    assert sums.num_positives.item() == 3
    torch.testing.assert_close(sums.hits, torch.tensor([1.0, 3.0], dtype=torch.float64))
    torch.testing.assert_close(sums.dcg, torch.tensor([1.0, 1 + 2 / LOG2_5], dtype=torch.float64))
    # recall per request @1: 1/2 and 0.
    torch.testing.assert_close(sums.recall_sum, torch.tensor([0.5, 2.0], dtype=torch.float64))


def test_padded_matches_flat_and_ignores_padding():
    preds, target, indexes = hand_example()
    p, t, m = to_padded(preds, target, indexes)
    for k in (1, 2, 3, 4, 5, 50):
        assert recflow_recall_padded(p, t, m, k).item() == pytest.approx(
            recflow_recall(preds, target, indexes, k).item()
        )
        assert recflow_ndcg_padded(p, t, m, k).item() == pytest.approx(recflow_ndcg(preds, target, indexes, k).item())
        assert normalized_ndcg_padded(p, t, m, k).item() == pytest.approx(
            normalized_ndcg(preds, target, indexes, k).item()
        )
        assert normalized_recall_padded(p, t, m, k).item() == pytest.approx(
            normalized_recall(preds, target, indexes, k).item()
        )


def test_ties_are_pessimistic():
    # Scores .5 .5 .5 .2, labels 0 1 0 0: the positive is ranked after both tied negatives -> rank 2.
    preds = torch.tensor([0.5, 0.5, 0.5, 0.2])
    target = torch.tensor([0, 1, 0, 0])
    indexes = torch.zeros(4, dtype=torch.long)
    assert recflow_recall(preds, target, indexes, 2).item() == 0.0
    assert recflow_recall(preds, target, indexes, 3).item() == 1.0
    assert recflow_ndcg(preds, target, indexes, 3).item() == pytest.approx(0.5)  # 1/log2(4)
    # Tied positives follow the tied negative and keep input order: ranks 1 and 2.
    preds = torch.tensor([0.7, 0.7, 0.7])
    target = torch.tensor([1, 0, 1])
    indexes = torch.zeros(3, dtype=torch.long)
    assert recflow_recall(preds, target, indexes, 2).item() == pytest.approx(0.5)
    # (1/log2(3) + 1/log2(4)) / 2 = 0.565465
    assert recflow_ndcg(preds, target, indexes, 3).item() == pytest.approx(0.5654648768, abs=1e-6)


def test_constant_scores_rank_every_positive_last():
    preds = torch.zeros(2, 5)
    target = torch.tensor([[1, 0, 0, 0, 0], [0, 0, 1, 1, 0]])
    mask = torch.ones(2, 5, dtype=torch.bool)
    # Positives take ranks 4 (row 0) and 3, 4 (row 1): nothing in the top 3.
    assert recflow_recall_padded(preds, target, mask, 3).item() == 0.0
    assert recflow_recall_padded(preds, target, mask, 4).item() == pytest.approx(1 / 3)


def test_no_counted_request_gives_nan():
    preds = torch.tensor([0.3, 0.2, 0.9])
    target = torch.tensor([1, 1, 0])
    indexes = torch.tensor([0, 0, 1])
    for fn in (recflow_recall, recflow_ndcg, normalized_ndcg, normalized_recall):
        assert math.isnan(fn(preds, target, indexes, 5).item())
    empty = torch.zeros(0)
    assert math.isnan(recflow_recall(empty, empty, empty.long(), 5).item())


def _reference_recflow(preds: np.ndarray, target: np.ndarray, indexes: np.ndarray, k: int) -> tuple[float, float]:
    """Transcription of RecFlow's evaluate_recall for tie-free scores: per request argsort descending."""
    hits = dcg = npos = 0.0
    for rid in np.unique(indexes):
        sel = indexes == rid
        labels = target[sel]
        if not 0 < labels.sum() < len(labels):
            continue
        order = np.argsort(-preds[sel])
        ranks = np.nonzero(labels[order])[0]
        npos += len(ranks)
        hits += (ranks < k).sum()
        dcg += (1.0 / np.log2(ranks[ranks < k] + 2)).sum()
    return hits / npos, dcg / npos


def test_against_reference_transcription_on_random_data():
    gen = torch.Generator().manual_seed(0)
    n = 600
    indexes = torch.randint(0, 40, (n,), generator=gen)
    preds = torch.randperm(n, generator=gen).float() / n  # distinct scores
    target = (torch.rand(n, generator=gen) < 0.2).long()
    for k in (1, 5, 20):
        recall, ndcg = _reference_recflow(preds.numpy(), target.numpy(), indexes.numpy(), k)
        assert recflow_recall(preds, target, indexes, k).item() == pytest.approx(recall, abs=1e-6)
        assert recflow_ndcg(preds, target, indexes, k).item() == pytest.approx(ndcg, abs=1e-6)


def test_normalized_metrics_match_torchmetrics_per_request():
    gen = torch.Generator().manual_seed(1)
    rows, width = 30, 12
    preds = torch.rand(rows, width, generator=gen)
    target = (torch.rand(rows, width, generator=gen) < 0.3).long()
    lengths = torch.randint(2, width + 1, (rows,), generator=gen)
    mask = torch.arange(width).unsqueeze(0) < lengths.unsqueeze(1)
    for k in (1, 3, 10):
        ndcgs, recalls = [], []
        for r in range(rows):
            p, t = preds[r, mask[r]], target[r, mask[r]]
            if 0 < t.sum() < len(t):
                ndcgs.append(retrieval_normalized_dcg(p, t, top_k=k).item())
                recalls.append(retrieval_recall(p, t, top_k=k).item())
        assert normalized_ndcg_padded(preds, target, mask, k).item() == pytest.approx(np.mean(ndcgs), abs=1e-5)
        assert normalized_recall_padded(preds, target, mask, k).item() == pytest.approx(np.mean(recalls), abs=1e-5)


def test_padded_sums_equal_flat_sums_on_random_data():
    gen = torch.Generator().manual_seed(2)
    rows, width = 25, 9
    preds = torch.randint(0, 4, (rows, width), generator=gen).float()  # many ties
    target = (torch.rand(rows, width, generator=gen) < 0.4).long()
    lengths = torch.randint(1, width + 1, (rows,), generator=gen)
    mask = torch.arange(width).unsqueeze(0) < lengths.unsqueeze(1)
    padded = ranking_sums_padded(preds, target, mask, [1, 3, 9])
    indexes = torch.arange(rows).unsqueeze(1).expand(rows, width)[mask]
    flat = ranking_sums(preds[mask], target[mask], indexes, [1, 3, 9])
    for a, b in zip(padded, flat, strict=True):
        torch.testing.assert_close(a, b)


def test_bad_inputs_raise():
    preds = torch.tensor([0.1, float("nan")])
    target = torch.tensor([1, 0])
    indexes = torch.tensor([0, 0])
    with pytest.raises(ValueError, match="NaN"):
        recflow_recall(preds, target, indexes, 1)
    with pytest.raises(ValueError, match="0/1"):
        recflow_recall(torch.tensor([0.1, 0.2]), torch.tensor([2, 0]), indexes, 1)
    with pytest.raises(ValueError, match="positive integer"):
        recflow_recall(torch.tensor([0.1, 0.2]), target, indexes, 0)
    with pytest.raises(ValueError, match="1-D"):
        recflow_recall(torch.tensor([0.1, 0.2]), target, torch.tensor([0]), 1)
    with pytest.raises(ValueError, match="bool"):
        recflow_recall_padded(torch.zeros(1, 2), torch.zeros(1, 2), torch.ones(1, 2), 1)
    with pytest.raises(ValueError, match="NaN labels"):
        recflow_recall_padded(torch.zeros(1, 2), torch.tensor([[float("nan"), 0.0]]), torch.ones(1, 2).bool(), 1)


def test_binary_log_loss_hand_value_and_clipping():
    # -(ln .9 + ln .8 + ln .5) / 3 = 0.340550
    preds = torch.tensor([0.9, 0.2, 0.5])
    target = torch.tensor([1, 0, 1])
    assert binary_log_loss(preds, target).item() == pytest.approx(0.3405504158, abs=1e-7)
    # Certain and wrong: clipped at float64 eps 2.22e-16 -> -ln(eps) = 36.043653 (scikit-learn's value).
    wrong = torch.tensor([0.0, 1.0], dtype=torch.float64)
    assert binary_log_loss(wrong, torch.tensor([1, 0])).item() == pytest.approx(36.0436533891, abs=1e-5)
    # float32 probabilities are clipped at float32 eps 1.19e-7 -> 15.942385.
    assert binary_log_loss(wrong.float(), torch.tensor([1, 0])).item() == pytest.approx(15.9423851529, abs=1e-4)
    # An explicit eps: p -> 1e-15 and 1 - p -> 1 - (1 - 1e-15), both computed in float64 as scikit-learn does.
    expected = (-math.log(1e-15) - math.log1p(-(1 - 1e-15))) / 2
    assert binary_log_loss(wrong, torch.tensor([1, 0]), eps=1e-15).item() == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="probabilities"):
        binary_log_loss(torch.tensor([2.5, -1.0]), torch.tensor([1, 0]))
