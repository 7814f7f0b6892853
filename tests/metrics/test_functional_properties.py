"""Property-based checks of stcrank.metrics.functional against a float64 brute-force reference.

The reference ranks each request by hand with the documented tie rule (pessimistic: among equal scores,
negatives first), so every generated case (ties, infinite scores, empty, all-positive and all-negative requests,
huge or negative request ids) is checked against an independent computation.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stcrank.metrics.functional import (
    binary_log_loss,
    log_loss_sums,
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

PROPS = settings(max_examples=30, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])

INF = float("inf")
SCORES = st.one_of(
    st.sampled_from([-1.0, 0.0, 0.5, 1.0]),  # a coarse grid: many ties
    st.floats(-1e6, 1e6, allow_nan=False, width=32),
    st.sampled_from([INF, -INF]),
)
REQUEST_IDS = st.one_of(st.integers(-(2**62), 2**62), st.integers(2**62 - 8, 2**62))


@st.composite
def flat_requests(draw, max_requests: int = 6, max_candidates: int = 9):
    """Flat ``(preds, target, indexes)`` of several requests, interleaved in a random order."""
    ids = draw(st.lists(REQUEST_IDS, min_size=0, max_size=max_requests, unique=True))
    rows = []
    for request in ids:
        size = draw(st.integers(1, max_candidates))
        kind = draw(st.sampled_from(["mixed", "mixed", "all_positive", "all_negative"]))
        for _ in range(size):
            label = {"mixed": draw(st.integers(0, 1)), "all_positive": 1, "all_negative": 0}[kind]
            rows.append((request, draw(SCORES), label))
    order = draw(st.permutations(range(len(rows))))
    rows = [rows[i] for i in order]
    preds = torch.tensor([r[1] for r in rows], dtype=torch.float32)
    target = torch.tensor([r[2] for r in rows], dtype=torch.long)
    indexes = torch.tensor([r[0] for r in rows], dtype=torch.long)
    return preds, target, indexes


def reference(preds, target, indexes, k):
    """Brute force in float64: (recflow recall, recflow ndcg, normalised ndcg, normalised recall)."""
    preds, target, indexes = preds.double().numpy(), target.numpy(), indexes.numpy()
    hits = dcg = positives = 0.0
    ndcg_sum = recall_sum = 0.0
    requests = 0
    for request in np.unique(indexes):
        s, y = preds[indexes == request], target[indexes == request]
        num_pos = int(y.sum())
        if not 0 < num_pos < len(y):
            continue
        requests += 1
        ranks = []
        for score in np.unique(s[y == 1]):
            # Pessimistic ties: every strictly better candidate and every tied negative come first.
            base = int((s > score).sum() + ((s == score) & (y == 0)).sum())
            ranks.extend(range(base, base + int(((s == score) & (y == 1)).sum())))
        gains = [1.0 / math.log2(r + 2) for r in ranks if r < k]
        ideal = sum(1.0 / math.log2(r + 2) for r in range(min(num_pos, k)))
        hits += len(gains)
        dcg += sum(gains)
        positives += num_pos
        ndcg_sum += sum(gains) / ideal
        recall_sum += len(gains) / num_pos
    if not requests:
        return (math.nan,) * 4  # undefined: no request counts
    return hits / positives, dcg / positives, ndcg_sum / requests, recall_sum / requests


def to_padded(preds, target, indexes, pad_score=float("nan"), pad_label=1):
    """One row per request (in order of first appearance), padded with junk that must be ignored."""
    ids = list(dict.fromkeys(indexes.tolist()))
    width = max([int((indexes == i).sum()) for i in ids], default=0)
    p = torch.full((len(ids), width), pad_score)
    t = torch.full((len(ids), width), pad_label, dtype=torch.long)
    m = torch.zeros(len(ids), width, dtype=torch.bool)
    for row, i in enumerate(ids):
        sel = indexes == i
        n = int(sel.sum())
        p[row, :n], t[row, :n], m[row, :n] = preds[sel], target[sel], True
    return p, t, m


FLAT = (recflow_recall, recflow_ndcg, normalized_ndcg, normalized_recall)
PADDED = (recflow_recall_padded, recflow_ndcg_padded, normalized_ndcg_padded, normalized_recall_padded)


@PROPS
@given(flat_requests(), st.integers(1, 12))
def test_flat_metrics_match_the_brute_force_reference(data, k):
    preds, target, indexes = data
    expected = reference(preds, target, indexes, k)
    for metric, value in zip(FLAT, expected, strict=True):
        got = metric(preds, target, indexes, k)
        assert torch.isfinite(got) == math.isfinite(value), metric.__name__  # NaN exactly when undefined
        assert got.item() == pytest.approx(value, abs=1e-6, nan_ok=True), metric.__name__


def assert_same_sums(left, right):
    for field in left._fields:
        assert torch.allclose(getattr(left, field).double(), getattr(right, field).double()), field


@PROPS
@given(flat_requests(), st.integers(1, 12))
def test_padded_metrics_equal_flat_metrics_whatever_the_padding(data, k):
    preds, target, indexes = data
    flat = ranking_sums(preds, target, indexes, [k, 3])
    assert_same_sums(ranking_sums_padded(*to_padded(preds, target, indexes), [k, 3]), flat)
    # Padding holding +inf scores and positive labels changes nothing either.
    assert_same_sums(ranking_sums_padded(*to_padded(preds, target, indexes, pad_score=INF), [k, 3]), flat)
    p, t, m = to_padded(preds, target, indexes)
    for flat_metric, padded_metric in zip(FLAT, PADDED, strict=True):
        expected = flat_metric(preds, target, indexes, k).item()
        assert padded_metric(p, t, m, k).item() == pytest.approx(expected, nan_ok=True)


@PROPS
@given(flat_requests(), st.data())
def test_candidate_order_and_request_ids_do_not_matter(data, draw):
    preds, target, indexes = data
    ks = [1, 2, 5, 100]
    before = ranking_sums(preds, target, indexes, ks)
    perm = torch.tensor(draw.draw(st.permutations(range(len(preds)))), dtype=torch.long)
    # Relabel requests with other (huge, negative) ids: only the grouping may matter.
    ids = sorted(set(indexes.tolist()))
    new_ids = draw.draw(st.lists(REQUEST_IDS, min_size=len(ids), max_size=len(ids), unique=True))
    relabel = dict(zip(ids, new_ids, strict=True))
    new_indexes = torch.tensor([relabel[i] for i in indexes.tolist()], dtype=torch.long)
    after = ranking_sums(preds[perm], target[perm], new_indexes[perm], ks)
    assert_same_sums(before, after)


@PROPS
@given(flat_requests())
def test_recall_and_dcg_are_bounded_and_monotone_in_k(data):
    preds, target, indexes = data
    ks = list(range(1, 12))
    sums = ranking_sums(preds, target, indexes, ks)
    assert (torch.diff(sums.hits) >= 0).all() and (torch.diff(sums.dcg) >= 0).all()
    assert (torch.diff(sums.recall_sum) >= -1e-12).all()
    positives, requests = max(int(sums.num_positives), 1), max(int(sums.num_requests), 1)
    for ratio in (sums.hits / positives, sums.dcg / positives, sums.ndcg_sum / requests, sums.recall_sum / requests):
        assert ((ratio >= 0) & (ratio <= 1 + 1e-9)).all(), ratio
    # Recall reaches 1 once K covers the longest request (every positive is ranked somewhere).
    if int(sums.num_positives):
        assert recflow_recall(preds, target, indexes, 10**6).item() == pytest.approx(1.0)
        assert normalized_recall(preds, target, indexes, 10**6).item() == pytest.approx(1.0)


@PROPS
@given(flat_requests(max_candidates=6))
def test_k_beyond_every_list_equals_k_at_the_longest_list(data):
    preds, target, indexes = data
    longest = max([int((indexes == i).sum()) for i in set(indexes.tolist())], default=1)
    sums = ranking_sums(preds, target, indexes, [longest, longest + 1, 10**9])
    for field in ("hits", "dcg", "ndcg_sum", "recall_sum"):
        values = getattr(sums, field)
        assert values[0] == values[1] == values[2], field


@PROPS
@given(st.integers(1, 8), st.integers(1, 8), st.sampled_from([-1.0, 0.0, 3.5, INF, -INF]), st.integers(1, 20))
def test_constant_scores_rank_every_positive_after_every_negative(num_pos, num_neg, score, k):
    """The documented tie rule: equal scores never help, so a constant model gets the worst ranking."""
    preds = torch.full((num_pos + num_neg,), score)
    target = torch.tensor([1] * num_pos + [0] * num_neg)
    indexes = torch.zeros(num_pos + num_neg, dtype=torch.long)
    expected_hits = max(0, min(k, num_pos + num_neg) - num_neg)
    assert recflow_recall(preds, target, indexes, k).item() == pytest.approx(expected_hits / num_pos)
    worst = sum(1 / math.log2(r + 2) for r in range(num_neg, min(k, num_pos + num_neg)))
    assert recflow_ndcg(preds, target, indexes, k).item() == pytest.approx(worst / num_pos)


@PROPS
@given(flat_requests(), st.integers(1, 12))
def test_requests_without_positives_or_negatives_are_excluded(data, k):
    """Adding all-positive and all-negative requests leaves every metric unchanged."""
    preds, target, indexes = data
    extra_ids = torch.tensor([2**62 + 1, 2**62 + 2, 2**62 + 2, -(2**62) - 1])
    extra_target = torch.tensor([1, 0, 0, 1])
    extra_preds = torch.tensor([INF, -INF, 0.0, 1.0])
    grown = (torch.cat([preds, extra_preds]), torch.cat([target, extra_target]), torch.cat([indexes, extra_ids]))
    before, after = ranking_sums(preds, target, indexes, [k]), ranking_sums(*grown, [k])
    assert_same_sums(before, after)


@PROPS
@given(flat_requests(), st.integers(0, 5), st.integers(1, 12))
def test_sums_of_split_batches_add_up_to_the_union(data, cut, k):
    """The additive statistics of two sets of rows sum to those of their union (streaming/DDP exactness)."""
    p, t, m = to_padded(*data)
    cut = min(cut, p.shape[0])
    whole = ranking_sums_padded(p, t, m, [k])
    parts = [ranking_sums_padded(p[:cut], t[:cut], m[:cut], [k]), ranking_sums_padded(p[cut:], t[cut:], m[cut:], [k])]
    for field in whole._fields:
        total = getattr(parts[0], field) + getattr(parts[1], field)
        assert torch.allclose(getattr(whole, field).double(), total.double()), field


def test_no_counted_request_gives_nan_not_zero():
    # A 0 would read as a model that ranks every positive last; the metric of nothing is undefined.
    empty = torch.zeros(0)
    for metric in FLAT:
        assert math.isnan(metric(empty, empty.long(), empty.long(), 5).item()), metric.__name__
    only_positives = (torch.tensor([0.3, 0.2]), torch.tensor([1, 1]), torch.tensor([0, 0]))
    for metric in FLAT:
        assert math.isnan(metric(*only_positives, 5).item()), metric.__name__
    no_rows = torch.zeros(0, 0)
    for metric in PADDED:
        assert math.isnan(metric(no_rows, no_rows.long(), no_rows.bool(), 5).item()), metric.__name__
    # Rows that are entirely padding count as nothing.
    padding_only = (torch.zeros(3, 4), torch.ones(3, 4), torch.zeros(3, 4, dtype=torch.bool))
    assert math.isnan(recflow_recall_padded(*padding_only, 2).item())
    assert math.isnan(binary_log_loss(empty, empty.long()).item())


@PROPS
@given(flat_requests(), st.data())
def test_nan_scores_and_labels_raise_naming_the_argument(data, draw):
    preds, target, indexes = data
    if not len(preds):
        return
    at = draw.draw(st.integers(0, len(preds) - 1))
    bad = preds.clone()
    bad[at] = float("nan")
    for metric in FLAT:
        with pytest.raises(ValueError, match="preds"):
            metric(bad, target, indexes, 3)
    nan_target = target.double()
    nan_target[at] = float("nan")
    with pytest.raises(ValueError, match=r"target.*NaN"):
        recflow_recall(preds, nan_target, indexes, 3)
    two = target.clone()
    two[at] = 2
    with pytest.raises(ValueError, match="0/1"):
        recflow_recall(preds, two, indexes, 3)
    p, t, m = to_padded(bad, target, indexes)
    with pytest.raises(ValueError, match="preds"):
        recflow_recall_padded(p, t, m, 3)


@pytest.mark.parametrize("k", [0, -1, 2.0, True, None])
def test_bad_cut_offs_raise(k):
    preds, target, indexes = torch.tensor([0.2, 0.1]), torch.tensor([1, 0]), torch.tensor([0, 0])
    with pytest.raises(ValueError, match="cut-off"):
        recflow_recall(preds, target, indexes, k)


def test_wrong_dtypes_and_shapes_raise_clearly():
    preds, target, indexes = torch.tensor([0.2, 0.1]), torch.tensor([1, 0]), torch.tensor([0, 0])
    with pytest.raises(ValueError, match="preds must be a floating-point"):
        recflow_recall(torch.tensor([2, 1]), target, indexes, 1)
    with pytest.raises(ValueError, match="indexes must hold integer"):
        recflow_recall(preds, target, indexes.float(), 1)
    with pytest.raises(ValueError, match="equal length"):
        recflow_recall(preds, target[:1], indexes, 1)
    with pytest.raises(ValueError, match="mask must be a bool"):
        recflow_recall_padded(preds[None], target[None], torch.ones(1, 2), 1)


# --- LogLoss ---------------------------------------------------------------------------------------------------

PROBS = st.one_of(st.floats(0.0, 1.0, width=32), st.sampled_from([0.0, 1.0, 0.5]))


@PROPS
@given(st.lists(st.tuples(PROBS, st.integers(0, 1)), max_size=30), st.sampled_from([None, 1e-7, 0.25]))
def test_log_loss_matches_a_clipped_float64_reference(rows, eps):
    preds = torch.tensor([r[0] for r in rows], dtype=torch.float32)
    target = torch.tensor([r[1] for r in rows], dtype=torch.long)
    clip = float(torch.finfo(torch.float32).eps) if eps is None else eps
    p = np.clip(preds.double().numpy(), clip, 1 - clip)
    y = target.numpy()
    expected = float(np.mean(-(y * np.log(p) + (1 - y) * np.log1p(-p)))) if len(rows) else math.nan
    got = binary_log_loss(preds, target, eps)
    assert math.isfinite(got.item()) == bool(rows)  # the mean of nothing is undefined
    assert got.item() == pytest.approx(expected, rel=1e-5, abs=1e-6, nan_ok=True)
    total, count = log_loss_sums(preds, target, eps)
    assert int(count) == len(rows) and total.dtype == torch.float64


@pytest.mark.parametrize("bad", [float("nan"), INF, -INF, 1.5, -0.1])
def test_log_loss_rejects_non_probabilities(bad):
    with pytest.raises(ValueError, match="probabilities in \\[0, 1\\]"):
        binary_log_loss(torch.tensor([0.5, bad]), torch.tensor([1, 0]))


def test_log_loss_rejects_nan_and_non_binary_labels():
    with pytest.raises(ValueError, match="NaN labels"):
        binary_log_loss(torch.tensor([0.5, 0.5]), torch.tensor([1.0, float("nan")]))
    with pytest.raises(ValueError, match="0/1"):
        binary_log_loss(torch.tensor([0.5, 0.5]), torch.tensor([1, 3]))


def _orderings_by_score(scores: list[float]) -> list[tuple[int, ...]]:
    """Every ordering of the candidates that sorts them by score, descending (ties in every order)."""
    import itertools

    return [
        perm
        for perm in itertools.permutations(range(len(scores)))
        if all(scores[a] >= scores[b] for a, b in itertools.pairwise(perm))
    ]


def _expected_reference(requests: list[tuple[list[float], list[int]]], k: int) -> dict[str, float]:
    """RecFlow and normalised metrics averaged over every tie ordering of every request (brute force)."""
    hits = dcg = ndcg_sum = recall_sum = 0.0
    positives = counted = 0
    for scores, labels in requests:
        n_pos = sum(labels)
        if not 0 < n_pos < len(labels):
            continue
        orderings = _orderings_by_score(scores)
        request_hits = request_dcg = 0.0
        for perm in orderings:
            for position, candidate in enumerate(perm):
                if labels[candidate] and position < k:
                    request_hits += 1.0 / len(orderings)
                    request_dcg += 1.0 / math.log2(position + 2) / len(orderings)
        ideal = sum(1.0 / math.log2(r + 2) for r in range(min(n_pos, k)))
        hits, dcg = hits + request_hits, dcg + request_dcg
        ndcg_sum += request_dcg / ideal
        recall_sum += request_hits / n_pos
        positives += n_pos
        counted += 1
    return {"hits": hits, "dcg": dcg, "ndcg_sum": ndcg_sum, "recall_sum": recall_sum, "positives": positives}


TIED_REQUEST = st.integers(1, 6).flatmap(
    lambda n: st.tuples(
        st.lists(st.sampled_from([0.0, 0.5, 1.0, INF]), min_size=n, max_size=n),
        st.lists(st.integers(0, 1), min_size=n, max_size=n),
    )
)


@settings(max_examples=120, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(TIED_REQUEST, min_size=1, max_size=4), st.integers(1, 7))
def test_expected_ties_equal_the_mean_over_all_tie_orderings(requests, k):
    expected = _expected_reference(requests, k)
    preds = torch.tensor([s for scores, _ in requests for s in scores], dtype=torch.float32)
    target = torch.tensor([y for _, labels in requests for y in labels])
    indexes = torch.tensor([i for i, (scores, _) in enumerate(requests) for _ in scores])
    flat = ranking_sums(preds, target, indexes, [k], ties="expected")
    width = max(len(scores) for scores, _ in requests)
    padded_preds = torch.full((len(requests), width), float("nan"))
    padded_target = torch.zeros(len(requests), width, dtype=torch.long)
    mask = torch.zeros(len(requests), width, dtype=torch.bool)
    for row, (scores, labels) in enumerate(requests):
        padded_preds[row, : len(scores)] = torch.tensor(scores)
        padded_target[row, : len(labels)] = torch.tensor(labels)
        mask[row, : len(scores)] = True
    padded = ranking_sums_padded(padded_preds, padded_target, mask, [k], ties="expected")
    for sums in (flat, padded):
        assert int(sums.num_positives) == expected["positives"]
        for name in ("hits", "dcg", "ndcg_sum", "recall_sum"):
            assert float(getattr(sums, name)[0]) == pytest.approx(expected[name], abs=1e-9), name


def test_expected_ties_hand_values_and_the_gap_to_pessimistic():
    # One request, all four candidates tied, one positive: pessimistic puts it last (rank 3); expected averages
    # ranks 0..3: recall@2 = 2/4, DCG@2 = (1 + 1/log2 3) / 4.
    preds, target, indexes = torch.zeros(4), torch.tensor([0, 1, 0, 0]), torch.zeros(4, dtype=torch.long)
    expected = ranking_sums(preds, target, indexes, [2], ties="expected")
    pessimistic = ranking_sums(preds, target, indexes, [2])
    assert float(expected.hits[0]) == pytest.approx(0.5)
    assert float(expected.dcg[0]) == pytest.approx((1 + 1 / math.log2(3)) / 4)
    assert float(pessimistic.hits[0]) == 0.0
    # Distinct scores: both rules agree.
    distinct = torch.tensor([0.4, 0.9, 0.1, 0.3])
    for name in ("hits", "dcg", "ndcg_sum", "recall_sum"):
        a = getattr(ranking_sums(distinct, target, indexes, [1, 2, 9], ties="expected"), name)
        b = getattr(ranking_sums(distinct, target, indexes, [1, 2, 9]), name)
        assert torch.allclose(a, b, atol=1e-12), name
    with pytest.raises(ValueError, match="ties must be one of"):
        ranking_sums(preds, target, indexes, [2], ties="optimistic")
