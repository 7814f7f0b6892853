import pytest
import torch

from stcrank import registry
from stcrank.rerank import brute_force_rerank, random_instances, sequence_value
from stcrank.testing import check_plugin
from stcrank_plugins.rerankers.exact import (
    ExactReranker,
    dominance_candidates,
    ratio_key,
    solve_subsequence,
)

RERANKERS = {
    "default": ExactReranker(),
    "all_passes": ExactReranker(pruning_top=2, pruning_grid=3),
    "threshold_only": ExactReranker(pruning_top=1, pruning_grid=0),
    "unpruned": ExactReranker(prune=False),
}


def assert_valid_lists(order, n, k):
    assert order.dtype == torch.long and order.shape[1] == k
    assert ((order >= 0) & (order < n)).all()
    ordered = order.sort(1).values
    assert (ordered[:, 1:] != ordered[:, :-1]).all(), "a list repeats a candidate"


def dominators(value, continue_prob):
    """count[r, i]: candidates j with v_j >= v_i and r_j >= r_i (r = v / (1 - s)), one of them strictly."""
    ratio = ratio_key(value, continue_prob)
    v_i, v_j = value.unsqueeze(2), value.unsqueeze(1)
    r_i, r_j = ratio.unsqueeze(2), ratio.unsqueeze(1)
    return ((v_j >= v_i) & (r_j >= r_i) & ((v_j > v_i) | (r_j > r_i))).sum(2)


@pytest.mark.parametrize("name", list(RERANKERS))
def test_equals_brute_force(name):
    reranker = RERANKERS[name]
    generator = torch.Generator().manual_seed(11)
    for n in (1, 2, 5, 8):
        for k in range(1, min(n, 4) + 1):
            value, continue_prob = random_instances(96, n, generator, negative=True)
            order = reranker(value, continue_prob, k)
            assert_valid_lists(order, n, k)
            best = brute_force_rerank(value, continue_prob, k).value
            assert torch.allclose(sequence_value(value, continue_prob, order), best, rtol=0, atol=1e-12), (n, k)


def test_float32_inputs():
    value, continue_prob = random_instances(64, 7, torch.Generator().manual_seed(5), dtype=torch.float32)
    order = ExactReranker()(value, continue_prob, 3)
    best = brute_force_rerank(value, continue_prob, 3).value
    assert torch.allclose(sequence_value(value, continue_prob, order), best, atol=1e-6)


@pytest.mark.parametrize(
    ("value", "continue_prob"),
    [
        (torch.zeros(3, 6), torch.rand(3, 6)),
        (-torch.rand(3, 6), torch.rand(3, 6)),
        (torch.rand(3, 6), torch.zeros(3, 6)),
        (torch.rand(3, 6), torch.ones(3, 6)),
        (torch.rand(3, 6) - 0.5, torch.ones(3, 6)),
    ],
    ids=["all_zero", "all_negative", "continue_0", "continue_1", "mixed_sign_continue_1"],
)
def test_degenerate_scores_still_give_k_items(value, continue_prob):
    value, continue_prob = value.double(), continue_prob.double()
    for reranker in RERANKERS.values():
        order = reranker(value, continue_prob, 4)
        assert_valid_lists(order, 6, 4)
        best = brute_force_rerank(value, continue_prob, 4).value
        assert torch.allclose(sequence_value(value, continue_prob, order), best, atol=1e-12)


def test_pruning_keeps_every_candidate_with_fewer_than_k_dominators():
    """Dominance in (value, ratio): dropped candidates have k dominators, the others are kept."""
    generator = torch.Generator().manual_seed(2)
    for n, k in ((12, 1), (20, 3), (30, 4), (40, 6)):
        value, continue_prob = random_instances(64, n, generator)
        count = dominators(value, continue_prob)
        for top, grid in ((1, 0), (3, 0), (3, 2), (5, 4), (64, 16)):
            kept = dominance_candidates(value, continue_prob, k, top=top, grid=grid, grid_after=0)
            slots = torch.where(kept < 0, n, kept)  # padding goes to a spare column
            mask = torch.zeros(64, n + 1, dtype=torch.bool).scatter_(1, slots, True)[:, :n]
            assert mask[count < k].all(), "an undominated candidate was dropped"
            assert (count[~mask] >= k).all(), "a candidate was dropped without k dominators"
            assert (~mask).sum() > 0.3 * (count >= k).sum(), "the pruning dropped almost nothing"


def test_all_pruning_passes_then_programme_equal_brute_force():
    generator = torch.Generator().manual_seed(12)
    for n, k in ((8, 1), (8, 2), (8, 4), (7, 3)):
        value, continue_prob = random_instances(128, n, generator)
        kept = dominance_candidates(value, continue_prob, k, top=2, grid=3, grid_after=0)
        order = solve_subsequence(value, continue_prob, kept, k)
        assert_valid_lists(order, n, k)
        best = brute_force_rerank(value, continue_prob, k).value
        assert torch.allclose(sequence_value(value, continue_prob, order), best, rtol=0, atol=1e-12)


def test_pruned_and_unpruned_reach_the_same_value_on_large_instances():
    generator = torch.Generator().manual_seed(4)
    for correlation, most_kept in ((0.0, 0.4), (-1.0, 0.7), (1.0, 0.3)):
        u = torch.rand(64, 300, generator=generator, dtype=torch.float64)
        noise = torch.rand(64, 300, generator=generator, dtype=torch.float64)
        value = u**3
        continue_prob = (0.74 + 0.24 * correlation * (2 * u - 1) + 0.2 * (noise - 0.5)).clamp(0.5, 0.98)
        continue_prob[::7, ::11] = 1.0  # exact ties at the top of the ratio order
        value[::5, ::13] = 0.0
        pruned = ExactReranker()(value, continue_prob, 10)
        unpruned = ExactReranker(prune=False)(value, continue_prob, 10)
        assert_valid_lists(pruned, 300, 10)
        assert torch.allclose(
            sequence_value(value, continue_prob, pruned), sequence_value(value, continue_prob, unpruned), atol=1e-12
        )
        kept = dominance_candidates(value, continue_prob, 10)
        assert (kept >= 0).sum(1).float().mean() < most_kept * 300


def test_ratio_dominance_drops_a_candidate_that_value_and_continuation_cannot():
    # Candidate 0 (v 0.5, s 0.5, r 1) is beaten in value and ratio by 1 and 2, which continue less often: no
    # dominator in (v, s), two in (v, r). With k = 2 it is dropped, and the optimum is unchanged.
    value = torch.tensor([[0.5, 2.0, 1.0, 0.1, 0.05]], dtype=torch.float64)
    continue_prob = torch.tensor([[0.5, 0.2, 0.4, 0.9, 0.95]], dtype=torch.float64)
    kept = dominance_candidates(value, continue_prob, 2, top=2, grid=0)
    assert 0 not in kept.tolist()[0]
    v_j, v_i = value.unsqueeze(1), value.unsqueeze(2)
    s_j, s_i = continue_prob.unsqueeze(1), continue_prob.unsqueeze(2)
    assert ((v_j >= v_i) & (s_j >= s_i) & ((v_j > v_i) | (s_j > s_i))).sum(2)[0, 0] == 0
    best = brute_force_rerank(value, continue_prob, 2).value
    order = solve_subsequence(value, continue_prob, kept, 2)
    assert torch.allclose(sequence_value(value, continue_prob, order), best, rtol=0, atol=1e-12)


def test_ratio_dominance_is_exact_on_anti_correlated_scores():
    """Value and continuation trade off, with ties at both clamps: the pruning drops much and loses nothing."""
    generator = torch.Generator().manual_seed(13)
    u = torch.rand(256, 9, generator=generator, dtype=torch.float64)
    value = (u**3).round(decimals=2)
    continue_prob = 0.98 - 0.48 * u + 0.1 * torch.randn(256, 9, generator=generator, dtype=torch.float64)
    continue_prob = continue_prob.clamp(0.5, 0.98)
    continue_prob[::5, ::4] = 1.0
    for k in (1, 2, 3):
        best = brute_force_rerank(value, continue_prob, k).value
        for top, grid in ((1, 0), (k, 0), (k, k + 1), (64, 16)):
            kept = dominance_candidates(value, continue_prob, k, top=top, grid=grid, grid_after=0)
            order = solve_subsequence(value, continue_prob, kept, k)
            assert torch.allclose(sequence_value(value, continue_prob, order), best, rtol=0, atol=1e-12), (k, top)
        v_j, v_i = value.unsqueeze(1), value.unsqueeze(2)
        s_j, s_i = continue_prob.unsqueeze(1), continue_prob.unsqueeze(2)
        by_continuation = ((v_j >= v_i) & (s_j >= s_i) & ((v_j > v_i) | (s_j > s_i))).sum(2) >= k
        by_ratio = dominators(value, continue_prob) >= k
        assert by_ratio.sum() > by_continuation.sum(), "the ratio rule should certify more candidates here"
        kept = dominance_candidates(value, continue_prob, k, top=k, grid=k + 1, grid_after=0)
        assert (kept >= 0).sum() < (~by_continuation).sum(), "the pruning kept as much as (v, s) dominance"


def test_batched_equals_per_request():
    value, continue_prob = random_instances(24, 40, torch.Generator().manual_seed(8), negative=True)
    value[3] = -value[3].abs()  # a request the pruning cannot touch, solved apart
    for reranker in RERANKERS.values():
        batched = reranker(value, continue_prob, 6)
        for r in range(24):
            assert torch.equal(reranker(value[r : r + 1], continue_prob[r : r + 1], 6), batched[r : r + 1])


def test_ratio_order_is_the_best_order_of_a_fixed_set():
    value, continue_prob = random_instances(40, 5, torch.Generator().manual_seed(6), negative=True)
    by_ratio = torch.sort(ratio_key(value, continue_prob), dim=1, descending=True, stable=True).indices
    got = sequence_value(value, continue_prob, by_ratio)
    # every order of all five items, for every request
    best = brute_force_rerank(value, continue_prob, 5).value
    assert torch.allclose(got, best, rtol=0, atol=1e-12)


def test_ratio_key_limits():
    value = torch.tensor([2.0, 0.0, -1.0, 3.0, -torch.inf])
    continue_prob = torch.tensor([1.0, 1.0, 1.0, 0.5, 0.0])
    assert ratio_key(value, continue_prob).tolist() == [torch.inf, 0.0, -torch.inf, 6.0, -torch.inf]


def test_solve_subsequence_ignores_padding():
    value = torch.tensor([[1.0, 5.0, 2.0, 9.0]])
    continue_prob = torch.tensor([[0.5, 0.5, 0.5, 0.5]])
    order = solve_subsequence(value, continue_prob, torch.tensor([[0, 2, -1, -1]]), 2)
    assert sorted(order.tolist()[0]) == [0, 2]


def test_validation_and_edge_shapes():
    reranker = ExactReranker()
    value, continue_prob = torch.rand(2, 5), torch.rand(2, 5)
    bad = value.clone()
    bad[0, 1] = torch.nan
    with pytest.raises(ValueError, match="value contains NaN"):
        reranker(bad, continue_prob, 2)
    bad = continue_prob.clone()
    bad[1, 4] = torch.nan
    with pytest.raises(ValueError, match="continue_prob contains NaN"):
        reranker(value, bad, 2)
    with pytest.raises(ValueError, match="k must be"):
        reranker(value, continue_prob, 6)
    with pytest.raises(ValueError, match=r"\[R, n\]"):
        reranker(value, continue_prob[:, :4], 2)
    with pytest.raises(ValueError, match="pruning_top"):
        ExactReranker(pruning_top=0)
    assert reranker(torch.rand(0, 5), torch.rand(0, 5), 2).shape == (0, 2)


def test_registered_under_exact():
    assert isinstance(registry.build("rerankers", "exact", prune=False), ExactReranker)


def test_honours_the_reranker_contract():
    check_plugin("rerankers", "exact")
