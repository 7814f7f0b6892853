"""Tests of stcrank.metrics.cascade: hand-computed values, a brute-force reference, and DDP-exact streaming."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torchmetrics.utilities.data import dim_zero_sum

from stcrank.metrics.cascade import (
    CascadeMetrics,
    cascade_values,
    graded_ndcg,
    ground_truth,
    joint_recall,
    pessimistic_rank,
    set_recall,
)

PROPS = settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


def hand_batch():
    # One request, 6 real candidates and 2 padded slots (NaN scores, relevance 99: both must be ignored).
    relevance = torch.tensor([[30.0, 29.0, 7.0, 7.0, 6.0, 5.0, 99.0, 99.0]])
    first = torch.tensor([[0.9, 0.1, 0.8, 0.7, 0.6, 0.5, float("nan"), 5.0]])
    second = torch.tensor([[0.2, 0.9, 0.1, 0.8, 0.3, 0.0, 7.0, float("nan")]])
    mask = torch.tensor([[True] * 6 + [False] * 2])
    return first, second, relevance, mask


def test_hand_computed_values():
    first, second, relevance, mask = hand_batch()
    # Ground truth of size 2: items 0 and 1.
    assert ground_truth(relevance, mask, 2).tolist() == [[1, 1, 0, 0, 0, 0, 0, 0]]
    # First stage keeps 4: items 0, 2, 3, 4 -> one of the two ground-truth items.
    assert set_recall(first, relevance, mask, 2, 4).item() == pytest.approx(0.5)
    # Second stage over the whole list keeps 2: items 1 and 3.
    assert set_recall(second, relevance, mask, 2, 2).item() == pytest.approx(0.5)
    # Cascade: of {0, 2, 3, 4} the second stage keeps 3 (0.8) and 4 (0.3): no ground-truth item survives.
    assert joint_recall(first, second, relevance, mask, 2, 4, 2).item() == 0.0
    # With 3 kept, item 0 (0.2) survives too.
    assert joint_recall(first, second, relevance, mask, 2, 4, 3).item() == pytest.approx(0.5)
    # NDCG@2 of the first stage: order 0, 2, ... -> (30 + 7/log2 3) / (30 + 29/log2 3).
    expected = (30 + 7 / math.log2(3)) / (30 + 29 / math.log2(3))
    assert graded_ndcg(first, relevance, mask, 2).item() == pytest.approx(expected)  # 0.712600
    # The second stage puts item 1 first: (29 + 7/log2 3) / (30 + 29/log2 3).
    expected = (29 + 7 / math.log2(3)) / (30 + 29 / math.log2(3))
    assert graded_ndcg(second, relevance, mask, 2).item() == pytest.approx(expected)


def test_ground_truth_splits_a_boundary_tie():
    relevance = torch.tensor([[8.0, 7.0, 7.0, 7.0, 5.0]])
    mask = torch.ones(1, 5, dtype=torch.bool)
    truth = ground_truth(relevance, mask, 2)
    torch.testing.assert_close(truth, torch.tensor([[1.0, 1 / 3, 1 / 3, 1 / 3, 0.0]]))
    # Fewer real candidates than the size: every real one is ground truth.
    mask = torch.tensor([[True, False, True, False, False]])
    assert ground_truth(relevance, mask, 5).tolist() == [[1.0, 0.0, 1.0, 0.0, 0.0]]


def test_ties_are_pessimistic():
    relevance = torch.tensor([[9.0, 8.0, 1.0, 1.0]])
    mask = torch.ones(1, 4, dtype=torch.bool)
    constant = torch.zeros(1, 4)
    # Equal scores rank the least relevant first: a constant model keeps the two irrelevant items.
    assert pessimistic_rank(constant, relevance, mask).tolist() == [[3, 2, 0, 1]]
    assert set_recall(constant, relevance, mask, 2, 2).item() == 0.0
    assert joint_recall(constant, constant, relevance, mask, 2, 3, 2).item() == 0.0
    # Order 2, 3, 1, 0: DCG = 1 + 1/log2 3 + 8/log2 4 + 9/log2 5 over IDCG = 9 + 8/log2 3 + 1/log2 4 + 1/log2 5.
    worst = (1 + 1 / math.log2(3) + 8 / 2 + 9 / math.log2(5)) / (9 + 8 / math.log2(3) + 1 / 2 + 1 / math.log2(5))
    assert graded_ndcg(constant, relevance, mask, 4).item() == pytest.approx(worst)  # 0.634727


def test_validation():
    first, second, relevance, mask = hand_batch()
    with pytest.raises(ValueError, match="second_k=5 must not exceed first_k=4"):
        joint_recall(first, second, relevance, mask, 2, 4, 5)
    bad = first.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN on real candidates"):
        set_recall(bad, relevance, mask, 2, 2)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        graded_ndcg(first, relevance, mask, 0)
    with pytest.raises(ValueError, match="bool tensor"):
        set_recall(first, relevance, mask.long(), 2, 2)


# -- brute force ---------------------------------------------------------------------------------------------------


def brute_truth(relevance: list[float], size: int) -> list[float]:
    """Membership in the top ``size`` averaged over every order consistent with relevance (all tie breaks)."""
    n = len(relevance)
    permutations = itertools.permutations(range(n))
    orders = [p for p in permutations if all(relevance[a] >= relevance[b] for a, b in itertools.pairwise(p))]
    return [sum(i in order[:size] for order in orders) / len(orders) for i in range(n)]


def brute_order(scores: list[float], relevance: list[float], items: list[int]) -> list[int]:
    return sorted(items, key=lambda i: (-scores[i], relevance[i], i))


def brute_request(first, second, relevance, size, first_k, second_k, ndcg_k):
    real = list(range(len(relevance)))
    truth = brute_truth(relevance, size)
    total = sum(truth)

    def recall(kept):
        return sum(truth[i] for i in kept) / total

    def ndcg(order):
        def dcg(o):
            return sum(relevance[i] / math.log2(r + 2) for r, i in enumerate(o[:ndcg_k]))

        ideal = dcg(sorted(real, key=lambda i: (-relevance[i], i)))
        return dcg(order) / ideal if ideal > 0 else 0.0

    order_1, order_2 = brute_order(first, relevance, real), brute_order(second, relevance, real)
    kept = order_1[:first_k]
    survived = brute_order(second, relevance, kept)[:second_k]
    return [ndcg(order_1), ndcg(order_2), recall(order_1[:first_k]), recall(order_2[:second_k]), recall(survived)]


@st.composite
def cascade_batch(draw):
    """Padded requests with tied scores, tied relevance, padding holding NaN, and empty rows."""
    rows, width = draw(st.integers(1, 4)), draw(st.integers(1, 6))
    score = st.sampled_from([0.0, 0.5, 1.0, 2.0, -1.0, float("inf")])
    grade = st.sampled_from([0.0, 5.0, 6.0, 7.0, 21.0, 30.0])
    first = torch.tensor(draw(st.lists(st.lists(score, min_size=width, max_size=width), min_size=rows, max_size=rows)))
    second = torch.tensor(draw(st.lists(st.lists(score, min_size=width, max_size=width), min_size=rows, max_size=rows)))
    relevance = torch.tensor(
        draw(st.lists(st.lists(grade, min_size=width, max_size=width), min_size=rows, max_size=rows))
    )
    keep = torch.tensor(
        draw(st.lists(st.lists(st.booleans(), min_size=width, max_size=width), min_size=rows, max_size=rows))
    )
    return first.masked_fill(~keep, float("nan")), second.masked_fill(~keep, float("nan")), relevance, keep


@PROPS
@given(cascade_batch(), st.integers(1, 4), st.integers(1, 5), st.integers(1, 5), st.integers(1, 4))
def test_functional_equals_brute_force(batch, size, first_k, second_k, ndcg_k):
    first, second, relevance, mask = batch
    second_k = min(second_k, first_k)
    values = cascade_values(
        first, second, relevance, mask, size=size, first_k=first_k, second_k=second_k, ndcg_k=ndcg_k
    )
    for row in range(first.shape[0]):
        items = mask[row].nonzero().flatten().tolist()
        assert bool(values.counted[row]) == bool(items)
        if not items:
            continue
        expected = brute_request(
            [first[row, i].item() for i in items],
            [second[row, i].item() for i in items],
            [relevance[row, i].item() for i in items],
            size,
            first_k,
            second_k,
            ndcg_k,
        )
        got = [values[k][row].item() for k in range(5)]
        assert got == pytest.approx(expected, abs=1e-9), (row, got, expected)


@PROPS
@given(cascade_batch(), cascade_batch())
def test_streaming_and_merged_states_equal_the_union(one, two):
    width = max(one[0].shape[1], two[0].shape[1])

    def pad(batch):
        extra = width - batch[0].shape[1]
        first, second, relevance, mask = batch
        return (
            torch.nn.functional.pad(first, (0, extra), value=float("nan")),
            torch.nn.functional.pad(second, (0, extra), value=float("nan")),
            torch.nn.functional.pad(relevance, (0, extra)),
            torch.nn.functional.pad(mask, (0, extra)),
        )

    one, two = pad(one), pad(two)
    union = tuple(torch.cat([a, b]) for a, b in zip(one, two, strict=True))
    left, right, whole = (CascadeMetrics(size=2, first_k=3, second_k=2, ndcg_k=2) for _ in range(3))
    left.update(*one)
    right.update(*two)
    whole.update(*union)
    assert all(fx is dim_zero_sum for fx in left._reductions.values())
    left.merge_state(right)  # what DDP's sum reduction does
    merged, expected = left.compute(), whole.compute()
    values = cascade_values(*union, size=2, first_k=3, second_k=2, ndcg_k=2)
    counted = values.counted
    for index, name in enumerate(whole.names):
        torch.testing.assert_close(merged[name], expected[name])
        mean = values[index][counted].mean().item() if bool(counted.any()) else 0.0
        assert expected[name].item() == pytest.approx(mean, abs=1e-6)


def test_metric_names_and_empty_state():
    metric = CascadeMetrics()
    assert metric.names == (
        "retrieval_ndcg@10",
        "prerank_ndcg@10",
        "retrieval_recall@10@30",
        "prerank_recall@10@20",
        "joint_recall",
    )
    assert all(value.item() == 0.0 for value in metric.compute().values())
    with pytest.raises(ValueError, match="second_k=31 must not exceed first_k=30"):
        CascadeMetrics(second_k=31)


def test_random_scores_give_the_combinatorial_expectation():
    # 40 candidates, 10 ground-truth items, keep 30 then 20: each item survives with probability 20/40.
    generator = torch.Generator().manual_seed(0)
    relevance = torch.cat([torch.arange(30.0, 20.0, -1), torch.full((30,), 5.0)]).expand(4000, 40)
    mask = torch.ones(4000, 40, dtype=torch.bool)
    metric = CascadeMetrics()
    metric.update(torch.rand(4000, 40, generator=generator), torch.rand(4000, 40, generator=generator), relevance, mask)
    out = metric.compute()
    assert out["joint_recall"].item() == pytest.approx(0.5, abs=0.01)
    assert out["retrieval_recall@10@30"].item() == pytest.approx(0.75, abs=0.01)
    assert out["prerank_recall@10@20"].item() == pytest.approx(0.5, abs=0.01)
