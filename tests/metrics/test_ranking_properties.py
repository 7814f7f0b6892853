"""Property-based checks of the torchmetrics classes of stcrank.metrics.ranking.

The streaming metrics must equal the functional metric of everything they were fed, however it was split into
batches; the exposure AUC must equal a brute-force pairwise AUC and must never report an undefined AUC (one class
only, NaN scores) as an ordinary number.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stcrank.metrics.functional import (
    binary_log_loss,
    normalized_ndcg_padded,
    normalized_recall_padded,
    ranking_sums_padded,
    recflow_ndcg_padded,
    recflow_recall_padded,
)
from stcrank.metrics.ranking import (
    BinaryLogLoss,
    NormalizedNDCG,
    NormalizedRecall,
    RecFlowNDCG,
    RecFlowRecall,
    StageCandidateMetrics,
    exposure_metrics,
)

PROPS = settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def padded_batch(draw, max_rows: int = 6, max_width: int = 7):
    """Padded ``(preds, target, mask)`` with ties, infinities, empty, all-positive and all-negative rows."""
    rows, width = draw(st.integers(0, max_rows)), draw(st.integers(1, max_width))
    score = st.one_of(st.sampled_from([0.0, 0.5, 1.0, float("inf"), -float("inf")]), st.floats(-10, 10, width=32))
    preds = torch.tensor(draw(st.lists(st.lists(score, min_size=width, max_size=width), min_size=rows, max_size=rows)))
    target = torch.tensor(
        draw(st.lists(st.lists(st.integers(0, 1), min_size=width, max_size=width), min_size=rows, max_size=rows))
    )
    lengths = torch.tensor(draw(st.lists(st.integers(0, width), min_size=rows, max_size=rows)), dtype=torch.long)
    mask = torch.arange(width).expand(rows, width) < lengths[:, None]
    # Padding holds NaN scores and label 1: both must be ignored.
    return preds.reshape(rows, width).masked_fill(~mask, float("nan")), target.reshape(rows, width), mask


@PROPS
@given(padded_batch(), st.integers(0, 6), st.integers(1, 9))
def test_streaming_metrics_equal_the_functional_metric_of_the_union(batch, cut, k):
    preds, target, mask = batch
    cut = min(cut, preds.shape[0])
    pairs = [
        (RecFlowRecall(k), recflow_recall_padded),
        (RecFlowNDCG(k), recflow_ndcg_padded),
        (NormalizedNDCG(k), normalized_ndcg_padded),
        (NormalizedRecall(k), normalized_recall_padded),
    ]
    for metric, functional in pairs:
        metric.update(preds[:cut], target[:cut], mask[:cut])
        metric.update(preds[cut:], target[cut:], mask[cut:])
        got, expected = metric.compute(), functional(preds, target, mask, k)
        assert bool(torch.isnan(got)) == bool(torch.isnan(expected))  # NaN exactly when no request counts
        assert torch.isnan(got) or 0 <= got.item() <= 1 + 1e-6
        assert got.item() == pytest.approx(expected.item(), abs=1e-6, nan_ok=True)


@PROPS
@given(padded_batch(), st.lists(st.integers(1, 9), min_size=1, max_size=4, unique=True))
def test_stage_candidate_metrics_report_every_metric_at_every_cut_off(batch, ks):
    preds, target, mask = batch
    metric = StageCandidateMetrics(ks)
    metric.update(preds, target, mask)
    out = metric.compute()
    assert set(out) == {f"{name}@{k}" for name in ("recall", "ndcg", "norm_ndcg", "norm_recall") for k in ks}
    for k in ks:
        recall, ndcg = recflow_recall_padded(preds, target, mask, k), normalized_ndcg_padded(preds, target, mask, k)
        assert out[f"recall@{k}"].item() == pytest.approx(recall.item(), nan_ok=True)
        assert out[f"norm_ndcg@{k}"].item() == pytest.approx(ndcg.item(), nan_ok=True)
    counted = bool(ranking_sums_padded(preds, target, mask, ks).num_requests)
    for value in out.values():
        assert bool(torch.isfinite(value)) == counted  # NaN exactly when no request counts


def test_a_metric_fed_nothing_or_only_ineligible_requests_is_nan():
    metric = StageCandidateMetrics([1, 5])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchmetrics warns about compute() before update()
        assert all(math.isnan(v.item()) for v in metric.compute().values())
    # One all-positive and one all-negative request: nothing counts.
    metric.update(torch.tensor([[0.3, 0.2], [0.1, 0.9]]), torch.tensor([[1, 1], [0, 0]]), torch.ones(2, 2).bool())
    assert all(math.isnan(v.item()) for v in metric.compute().values())


def test_streaming_metrics_reject_nan_scores_on_real_candidates():
    metric = RecFlowRecall(3)
    with pytest.raises(ValueError, match="preds contains NaN"):
        metric.update(torch.tensor([[0.1, float("nan")]]), torch.tensor([[1, 0]]), torch.tensor([[True, True]]))


# --- exposure AUC and LogLoss ----------------------------------------------------------------------------------


def pairwise_auc(preds: np.ndarray, labels: np.ndarray) -> float:
    """Brute-force AUC in float64: P(score_pos > score_neg) + 0.5 P(tie) over every (positive, negative) pair."""
    pos, neg = preds[labels == 1], preds[labels == 0]
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))


@PROPS
@given(
    st.lists(
        st.tuples(st.one_of(st.sampled_from([0.0, 0.25, 0.5, 1.0]), st.floats(0, 1, width=32)), st.integers(0, 1)),
        min_size=2,
        max_size=40,
    ),
    st.integers(0, 40),
)
def test_exposure_auc_and_logloss_match_brute_force(rows, cut):
    preds = torch.tensor([r[0] for r in rows], dtype=torch.float32)
    labels = torch.tensor([r[1] for r in rows], dtype=torch.long)
    if labels.min() == labels.max():
        labels[0] = 1 - labels[0]  # both classes present: the AUC is defined
    metrics = exposure_metrics()
    metrics.update(preds[:cut], labels[:cut])
    metrics.update(preds[cut:], labels[cut:])
    out = metrics.compute()
    assert out["auc"].item() == pytest.approx(pairwise_auc(preds.double().numpy(), labels.numpy()), abs=1e-5)
    assert out["logloss"].item() == pytest.approx(binary_log_loss(preds, labels).item(), rel=1e-5)


@pytest.mark.parametrize("label", [0, 1])
def test_exposure_auc_of_a_single_class_is_not_reported_as_a_number(label):
    """With only positives (or only negatives) the AUC is undefined: NaN or a ValueError, never a plain 0."""
    metrics = exposure_metrics()
    metrics.update(torch.tensor([0.2, 0.7, 0.4]), torch.full((3,), label))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            auc = metrics.compute()["auc"].item()
    except ValueError as error:
        assert "auc" in str(error).lower() or "class" in str(error).lower()
    else:
        assert math.isnan(auc), f"AUC over a single class reported as {auc}"


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 1.5])
def test_exposure_metrics_reject_scores_that_are_not_probabilities(bad):
    metrics = exposure_metrics()
    with pytest.raises(ValueError, match="probabilities"):
        metrics.update(torch.tensor([0.2, bad, 0.4]), torch.tensor([0, 1, 1]))


@PROPS
@given(st.lists(st.tuples(st.floats(0, 1, width=32), st.integers(0, 1)), max_size=30), st.integers(0, 30))
def test_logloss_metric_is_exact_over_any_split(rows, cut):
    preds = torch.tensor([r[0] for r in rows], dtype=torch.float32)
    labels = torch.tensor([r[1] for r in rows], dtype=torch.long)
    metric = BinaryLogLoss()
    metric.update(preds[:cut], labels[:cut])
    metric.update(preds[cut:], labels[cut:])
    expected = binary_log_loss(preds, labels).item()
    assert metric.compute().item() == pytest.approx(expected, rel=1e-5, abs=1e-7, nan_ok=True)
