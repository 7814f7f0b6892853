"""Property-based checks of the re-rankers against brute force and against each other.

Generated instances are rich in what re-rankers get wrong: ties, zeros, negative values, continuation
probabilities of exactly 0 and 1. For ``n <= 7`` the exact re-ranker must reach the brute-force optimum, every
re-ranker must return ``k`` distinct valid candidates, no re-ranker may beat the exact one, and a request must get
the same list alone as in a batch. Bad input (NaN, infinities, probabilities outside [0, 1], bad ``k``, wrong
dtypes) must raise a ``ValueError``/``TypeError`` naming the argument.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stcrank.rerank.brute_force import brute_force_rerank
from stcrank.rerank.ordering import stable_topk
from stcrank.rerank.sequence import sequence_value
from stcrank_plugins.rerankers.beam_search import BeamSearchReranker
from stcrank_plugins.rerankers.exact import ExactReranker, dominance_candidates, solve_subsequence
from stcrank_plugins.rerankers.greedy import GreedyReranker

PROPS = settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])

VALUES = st.one_of(st.sampled_from([0.0, 0.0, 1.0, 0.5, -0.5, 2.0]), st.floats(-3, 3, width=32))
CONTINUE = st.one_of(st.sampled_from([0.0, 1.0, 0.5]), st.floats(0, 1, width=32))


@st.composite
def instances(draw, max_rows: int = 4, max_n: int = 7, min_rows: int = 1):
    """``(value, continue_prob, k)`` as float64 ``[R, n]`` tensors."""
    rows, n = draw(st.integers(min_rows, max_rows)), draw(st.integers(1, max_n))
    k = draw(st.integers(1, n))
    grid = st.lists(st.lists(VALUES, min_size=n, max_size=n), min_size=rows, max_size=rows)
    cont = st.lists(st.lists(CONTINUE, min_size=n, max_size=n), min_size=rows, max_size=rows)
    value = torch.tensor(draw(grid), dtype=torch.float64).reshape(rows, n)
    continue_prob = torch.tensor(draw(cont), dtype=torch.float64).reshape(rows, n)
    return value, continue_prob, k


def reference_value(value, continue_prob, order):
    """Sequence value in plain Python: sum_i prod_{j<i} s_j * v_i."""
    out = []
    for r, row in enumerate(order.tolist()):
        total, reach = 0.0, 1.0
        for j in row:
            total += reach * float(value[r, j])
            reach *= float(continue_prob[r, j])
        out.append(total)
    return torch.tensor(out, dtype=torch.float64)


def assert_valid_lists(order, rows, n, k):
    assert order.dtype == torch.long and tuple(order.shape) == (rows, k)
    for row in order.tolist():
        assert len(set(row)) == k and all(0 <= j < n for j in row)


RERANKERS = [
    GreedyReranker(),
    BeamSearchReranker(beam_size=1),
    BeamSearchReranker(beam_size=3),
    BeamSearchReranker(beam_size=3, prune=False),
    ExactReranker(),
    ExactReranker(prune=False),
    ExactReranker(pruning_top=1, pruning_grid=2),
]


@PROPS
@given(instances())
def test_exact_reaches_the_brute_force_optimum_and_nobody_beats_it(case):
    value, continue_prob, k = case
    rows, n = value.shape
    best = brute_force_rerank(value, continue_prob, k).value
    for reranker in RERANKERS:
        order = reranker(value, continue_prob, k)
        assert_valid_lists(order, rows, n, k)
        got = sequence_value(value, continue_prob, order)
        assert torch.allclose(got, reference_value(value, continue_prob, order), atol=1e-9)
        assert (got <= best + 1e-9).all(), type(reranker).__name__
        if isinstance(reranker, ExactReranker):
            assert torch.allclose(got, best, atol=1e-9)


@PROPS
@given(instances())
def test_greedy_and_beam_of_one_are_the_stable_value_sort(case):
    """Greedy = top-k by value, ties by lower index; beam search with one beam reproduces it (documented)."""
    value, continue_prob, k = case
    expected = torch.sort(value, dim=1, descending=True, stable=True).indices[:, :k]
    assert torch.equal(GreedyReranker()(value, continue_prob, k), expected)
    assert torch.equal(BeamSearchReranker(beam_size=1)(value, continue_prob, k), expected)
    assert torch.equal(stable_topk(value, k)[1], expected)


@PROPS
@given(instances(max_rows=5, max_n=12), st.data())
def test_a_request_gets_the_same_list_alone_as_in_a_batch(case, data):
    value, continue_prob, k = case
    row = data.draw(st.integers(0, value.shape[0] - 1))
    for reranker in RERANKERS:
        batch = reranker(value, continue_prob, k)
        alone = reranker(value[row : row + 1], continue_prob[row : row + 1], k)
        assert torch.equal(batch[row : row + 1], alone), type(reranker).__name__


@PROPS
@given(instances(max_n=7), st.data())
def test_the_optimal_value_does_not_depend_on_the_candidate_order(case, data):
    value, continue_prob, k = case
    perm = torch.tensor(data.draw(st.permutations(range(value.shape[1]))), dtype=torch.long)
    exact = ExactReranker()
    before = sequence_value(value, continue_prob, exact(value, continue_prob, k))
    shuffled_value, shuffled_continue = value[:, perm], continue_prob[:, perm]
    after = sequence_value(shuffled_value, shuffled_continue, exact(shuffled_value, shuffled_continue, k))
    assert torch.allclose(before, after, atol=1e-9)


@PROPS
@given(instances(max_rows=3, max_n=40), st.integers(1, 6), st.integers(0, 6))
def test_dominance_pruning_keeps_the_optimum(case, top, grid):
    """Both pruning passes (threshold and grid, forced on) keep every candidate the optimum may need."""
    value, continue_prob, k = case
    rows, n = value.shape
    everything = torch.arange(n).expand(rows, n)
    unpruned = sequence_value(value, continue_prob, solve_subsequence(value, continue_prob, everything, k))
    kept = dominance_candidates(value, continue_prob, k, top=top, grid=grid, grid_after=0)
    assert ((kept >= 0).sum(1) >= k).all()
    pruned = sequence_value(value, continue_prob, solve_subsequence(value, continue_prob, kept, k))
    assert torch.allclose(pruned, unpruned, atol=1e-9)


@PROPS
@given(instances(max_rows=3, max_n=30))
def test_beam_search_pruning_to_reachable_candidates_is_exact(case):
    value, continue_prob, k = case
    pruned = BeamSearchReranker(beam_size=4)(value, continue_prob, k)
    unpruned = BeamSearchReranker(beam_size=4, prune=False)(value, continue_prob, k)
    # Pruning to the reachable candidates is exact: the very same lists.
    assert torch.equal(pruned, unpruned)


@PROPS
@given(instances(max_rows=3, max_n=6))
def test_continue_prob_of_zero_or_one_everywhere(case):
    """s = 0: only the first slot counts; s = 1: the value is the plain sum of the k best values."""
    value, _, k = case
    zero, one = torch.zeros_like(value), torch.ones_like(value)
    exact = ExactReranker()
    top_sum = torch.sort(value, dim=1, descending=True).values[:, :k].sum(1)
    assert torch.allclose(sequence_value(value, one, exact(value, one, k)), top_sum)
    assert torch.allclose(sequence_value(value, zero, exact(value, zero, k)), value.max(1).values)


@pytest.mark.parametrize("reranker", RERANKERS, ids=lambda r: f"{type(r).__name__}")
def test_zero_requests_give_an_empty_batch(reranker):
    for dtype in (torch.float32, torch.float64):
        out = reranker(torch.zeros(0, 5, dtype=dtype), torch.zeros(0, 5, dtype=dtype), 3)
        assert out.dtype == torch.long and tuple(out.shape) == (0, 3)


@pytest.mark.parametrize("reranker", RERANKERS, ids=lambda r: f"{type(r).__name__}")
def test_bad_k_and_shapes_raise_clearly_through_rerank_too(reranker):
    value, continue_prob = torch.rand(2, 4), torch.rand(2, 4)
    for k in (0, 5, -1):
        with pytest.raises(ValueError, match=r"k must be in \[1, n=4\]"):
            reranker.rerank(value, continue_prob, k)
    for k in (2.0, True):
        with pytest.raises(TypeError, match="k must be an int"):
            reranker.rerank(value, continue_prob, k)
    with pytest.raises(ValueError, match=r"k must be in \[1, n=0\]"):
        reranker.rerank(torch.zeros(2, 0), torch.zeros(2, 0), 1)
    with pytest.raises(ValueError, match=r"\[R, n\]"):
        reranker.rerank(value, continue_prob[:, :3], 2)
    with pytest.raises(ValueError, match=r"\[R, n\]"):
        reranker.rerank(value[0], continue_prob[0], 2)


BAD_VALUES = [
    ("value", float("nan"), ValueError, "value contains NaN at request 1, candidate 2"),
    ("value", float("inf"), ValueError, "value must be finite; found an infinity at request 1, candidate 2"),
    ("value", -float("inf"), ValueError, "value must be finite"),
    ("value", -1e308, ValueError, "value holds 1e\\+308 in magnitude"),
    ("continue_prob", float("nan"), ValueError, "continue_prob contains NaN at request 1, candidate 2"),
    ("continue_prob", 1.5, ValueError, "continue_prob must lie in \\[0, 1\\]; found 1.5 at request 1, candidate 2"),
    ("continue_prob", -0.1, ValueError, "continue_prob must lie in \\[0, 1\\]"),
    ("continue_prob", float("inf"), ValueError, "continue_prob must lie in \\[0, 1\\]"),
]


@pytest.mark.parametrize("reranker", RERANKERS, ids=lambda r: f"{type(r).__name__}")
@pytest.mark.parametrize(("name", "bad", "error", "message"), BAD_VALUES)
def test_non_finite_and_out_of_range_scores_raise_naming_the_argument(reranker, name, bad, error, message):
    tensors = {"value": torch.rand(3, 4, dtype=torch.float64), "continue_prob": torch.rand(3, 4, dtype=torch.float64)}
    tensors[name][1, 2] = bad
    with pytest.raises(error, match=message):
        reranker(tensors["value"], tensors["continue_prob"], 2)


@pytest.mark.parametrize("reranker", RERANKERS, ids=lambda r: f"{type(r).__name__}")
def test_integer_scores_raise_a_type_error(reranker):
    with pytest.raises(TypeError, match="value must be a floating-point tensor"):
        reranker(torch.ones(1, 3, dtype=torch.long), torch.rand(1, 3), 2)
    with pytest.raises(TypeError, match="continue_prob must be a floating-point tensor"):
        reranker(torch.rand(1, 3), torch.ones(1, 3, dtype=torch.bool), 2)


@PROPS
@given(instances(max_rows=2, max_n=6))
def test_large_but_valid_values_do_not_overflow(case):
    """Values up to the documented bound (dtype maximum / n) give finite list values, never inf or NaN."""
    value, continue_prob, k = case
    n = value.shape[1]
    scale = 0.5 * torch.finfo(torch.float64).max / n / max(1.0, float(value.abs().max()))
    big = value * scale
    for reranker in RERANKERS:
        out = sequence_value(big, continue_prob, reranker(big, continue_prob, k))
        assert torch.isfinite(out).all(), type(reranker).__name__
    best = brute_force_rerank(big, continue_prob, k).value
    exact = sequence_value(big, continue_prob, ExactReranker()(big, continue_prob, k))
    assert torch.allclose(exact / scale, best / scale, atol=1e-9)
    assert torch.isfinite(best).all()


@pytest.mark.parametrize("reranker", RERANKERS, ids=lambda r: f"{type(r).__name__}")
def test_scores_that_require_grad_are_accepted_and_untouched(reranker):
    value = torch.rand(3, 6, dtype=torch.float64, requires_grad=True)
    continue_prob = torch.rand(3, 6, dtype=torch.float64, requires_grad=True)
    expected = reranker(value.detach(), continue_prob.detach(), 3)
    for call in (reranker, reranker.rerank):
        order = call(value, continue_prob, 3)
        assert torch.equal(order, expected) and not order.requires_grad
    assert value.grad is None and value.requires_grad and continue_prob.requires_grad
