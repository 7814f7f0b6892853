"""Tests of the torchmetrics classes in stcrank.metrics.ranking."""

from __future__ import annotations

import math

import pytest
import torch
from torchmetrics.utilities.data import dim_zero_sum

from stcrank.metrics.functional import ranking_sums_padded
from stcrank.metrics.ranking import (
    BinaryAUC,
    BinaryLogLoss,
    CorpusRetrievalMetrics,
    NormalizedNDCG,
    NormalizedRecall,
    RecFlowNDCG,
    RecFlowRecall,
    StageCandidateMetrics,
    exposure_metrics,
)

LOG2_5 = math.log2(5)


def batch_one():
    # Row 0: .9 .8 .7 .6 .5 with labels 1 0 0 1 0 -> positives at ranks 0 and 3.
    # Row 1: .1 .2 .3 .4 .5 with labels 0 1 0 0 0 -> positive at rank 3.
    # Row 2: all positive (ineligible); its padding holds a NaN score and label 0.
    preds = torch.tensor([[0.9, 0.8, 0.7, 0.6, 0.5], [0.1, 0.2, 0.3, 0.4, 0.5], [0.3, 0.2, float("nan"), 0.0, 0.0]])
    target = torch.tensor([[1, 0, 0, 1, 0], [0, 1, 0, 0, 0], [1, 1, 0, 0, 0]])
    mask = torch.tensor([[True] * 5, [True] * 5, [True, True, False, False, False]])
    return preds, target, mask


def batch_two():
    # One counted row with 3 candidates: .2 .9 .4 with labels 1 0 0 -> positive at rank 2.
    preds = torch.tensor([[0.2, 0.9, 0.4]])
    target = torch.tensor([[1, 0, 0]])
    mask = torch.ones(1, 3, dtype=torch.bool)
    return preds, target, mask


def test_single_k_classes_hand_values():
    preds, target, mask = batch_one()
    recall, ndcg = RecFlowRecall(4), RecFlowNDCG(4)
    norm_ndcg, norm_recall = NormalizedNDCG(2), NormalizedRecall(2)
    for metric in (recall, ndcg, norm_ndcg, norm_recall):
        metric.update(preds, target, mask)
    assert recall.compute().item() == pytest.approx(1.0)  # 3 of 3 positives within rank < 4
    assert ndcg.compute().item() == pytest.approx((1 + 2 / LOG2_5) / 3, abs=1e-6)  # 0.620451
    assert norm_ndcg.compute().item() == pytest.approx(0.3065735964, abs=1e-6)  # (0.613147 + 0) / 2
    assert norm_recall.compute().item() == pytest.approx(0.25)  # (1/2 + 0) / 2


def test_accumulates_exact_sums_over_batches():
    metric = StageCandidateMetrics(ks=(1, 3))
    metric.update(*batch_one())
    metric.update(*batch_two())
    out = metric.compute()
    # Positives: ranks 0, 3 (row 0), 3 (row 1), 2 (batch two) -> 4 positives.
    assert out["recall@1"].item() == pytest.approx(1 / 4)
    assert out["recall@3"].item() == pytest.approx(2 / 4)
    # DCG@3: 1 + 1/log2(4) = 1.5 over 4 positives.
    assert out["ndcg@3"].item() == pytest.approx(1.5 / 4)
    # Per-request recall@3: 1/2, 0, 1 -> mean 1/2; an average of per-batch values would give (1/4 + 1) / 2.
    assert out["norm_recall@3"].item() == pytest.approx(0.5)
    assert set(out) == {f"{name}@{k}" for name in ("recall", "ndcg", "norm_ndcg", "norm_recall") for k in (1, 3)}


def test_merged_states_equal_the_metric_of_the_union():
    # What DDP does: every state is summed across processes.
    left, right, whole = (StageCandidateMetrics(ks=(2, 4)) for _ in range(3))
    left.update(*batch_one())
    right.update(*batch_two())
    whole.update(*batch_one())
    whole.update(*batch_two())
    assert all(fx is dim_zero_sum for fx in left._reductions.values())
    left.merge_state(right)
    merged, expected = left.compute(), whole.compute()
    for key in expected:
        torch.testing.assert_close(merged[key], expected[key])
    # Recall@2 is 1/3 on batch one and 0 on batch two; the union's is 1/4, not their mean 1/6.
    assert merged["recall@2"].item() == pytest.approx(1 / 4)


def test_matches_functional_sums():
    metric = StageCandidateMetrics(ks=(5,))
    preds, target, mask = batch_one()
    metric.update(preds, target, mask)
    sums = ranking_sums_padded(preds, target, mask, [5])
    assert metric.num_requests.item() == sums.num_requests.item() == 2
    assert metric.num_positives.item() == sums.num_positives.item() == 3


def test_every_cut_off_equals_the_single_k_classes_exactly():
    ks = (1, 2, 4)
    classes = {
        "recall": RecFlowRecall,
        "ndcg": RecFlowNDCG,
        "norm_ndcg": NormalizedNDCG,
        "norm_recall": NormalizedRecall,
    }
    singles = {f"{name}@{k}": cls(k) for name, cls in classes.items() for k in ks}
    metric = StageCandidateMetrics(ks)
    for batch in (batch_one(), batch_two()):
        metric.update(*batch)
        for single in singles.values():
            single.update(*batch)
    out = metric.compute()
    assert set(out) == set(singles)
    for key, single in singles.items():
        assert torch.equal(out[key], single.compute()), key


def test_a_metric_without_a_counted_request_is_nan():
    metric = StageCandidateMetrics(ks=(5,))
    metric.update(torch.tensor([[0.5, 0.1]]), torch.tensor([[1, 1]]), torch.ones(1, 2, dtype=torch.bool))
    assert all(math.isnan(value.item()) for value in metric.compute().values())
    retrieval = CorpusRetrievalMetrics(ks=(2,))
    retrieval.update(torch.tensor([[0, 1]]), torch.tensor([[3]]), torch.tensor([[False]]))
    assert all(math.isnan(value.item()) for value in retrieval.compute().values())


def test_corpus_retrieval_metrics_hand_values():
    metric = CorpusRetrievalMetrics(ks=(2, 4))
    topk = torch.tensor([[5, 3, 9, 1], [2, 4, 6, 8]])
    # Request 0: 3 at rank 1, 1 at rank 3, 7 missed. Request 1: 8 at rank 3; the masked 2s are ignored.
    positives = torch.tensor([[3, 1, 7], [8, 2, 2]])
    positive_mask = torch.tensor([[True, True, True], [True, False, False]])
    metric.update(topk, positives, positive_mask)
    out = metric.compute()
    assert out["recall@2"].item() == pytest.approx(1 / 4)
    assert out["recall@4"].item() == pytest.approx(3 / 4)
    # (1/log2(3) + 1/log2(5) + 1/log2(5)) / 4 = 0.373071
    assert out["ndcg@4"].item() == pytest.approx(0.3730707174, abs=1e-6)


def test_binary_log_loss_metric():
    metric = BinaryLogLoss()
    metric.update(torch.tensor([0.9, 0.2]), torch.tensor([1, 0]))
    metric.update(torch.tensor([0.5]), torch.tensor([1]))
    # -(ln .9 + ln .8 + ln .5) / 3 = 0.340550
    assert metric.compute().item() == pytest.approx(0.3405504158, abs=1e-6)
    with pytest.warns(UserWarning, match="before the ``update``"):
        assert math.isnan(BinaryLogLoss().compute().item())
    with pytest.raises(ValueError, match="eps"):
        BinaryLogLoss(eps=0.7)


def test_exposure_metrics_auc_and_logloss():
    metrics = exposure_metrics()
    preds = torch.tensor([0.1, 0.4, 0.35, 0.8])
    target = torch.tensor([0, 0, 1, 1])
    metrics.update(preds, target)
    out = metrics.compute()
    # Positive/negative pairs ordered correctly: (.35>.1), (.8>.1), (.8>.4); (.35<.4) wrong -> AUC 3/4.
    assert out["auc"].item() == pytest.approx(0.75)
    expected = -(math.log(0.9) + math.log(0.6) + math.log(0.35) + math.log(0.8)) / 4
    assert out["logloss"].item() == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(
    "labels", [[0, 2, 1, 0], [0, -1, 1, 0], [0.0, 0.5, 1.0, 0.0], [0.0, float("nan"), 1.0, 0.0]], ids=str
)
def test_binary_auc_refuses_labels_other_than_0_and_1(labels):
    # BinaryAUROC would count a 2 as a positive, skip a -1 and threshold a 0.5: a number that means nothing.
    with pytest.raises(ValueError, match="BinaryAUC: target"):
        BinaryAUC().update(torch.tensor([0.1, 0.9, 0.5, 0.2]), torch.tensor(labels))


def test_binary_auc_takes_bool_integer_and_float_labels_alike():
    preds = torch.tensor([0.1, 0.9, 0.5, 0.2])
    results = []
    for labels in (torch.tensor([True, False, True, False]), torch.tensor([1, 0, 1, 0]), torch.tensor([1.0, 0, 1, 0])):
        metric = BinaryAUC()
        metric.update(preds, labels)
        results.append(metric.compute().item())
    assert results == [pytest.approx(0.25)] * 3  # pairs (pos, neg): only 0.5 > 0.2 of four


def test_binary_auc_refuses_shapes_that_differ():
    with pytest.raises(ValueError, match=r"BinaryAUC: preds and target must have the same shape; got \(4,\), \(3,\)"):
        BinaryAUC().update(torch.rand(4), torch.tensor([0, 1, 0]))


def test_stage_candidate_metrics_with_expected_ties():
    # Row: four tied candidates, one positive -> expected recall@2 = 1/2; pessimistic = 0.
    preds = torch.zeros(1, 5)
    target = torch.tensor([[0, 1, 0, 0, 0]])
    mask = torch.tensor([[True, True, True, True, False]])
    expected, pessimistic = StageCandidateMetrics(ks=(2,), ties="expected"), StageCandidateMetrics(ks=(2,))
    expected.update(preds, target, mask)
    pessimistic.update(preds, target, mask)
    assert expected.compute()["recall@2"].item() == pytest.approx(0.5)
    assert pessimistic.compute()["recall@2"].item() == 0.0
    with pytest.raises(ValueError, match="ties"):
        StageCandidateMetrics(ties="random")
