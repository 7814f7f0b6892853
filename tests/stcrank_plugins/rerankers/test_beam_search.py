import itertools
import math
from collections.abc import Mapping
from typing import ClassVar

import pytest
import torch

from stcrank import registry
from stcrank.rerank import (
    BeamState,
    CategoryDiversityScorer,
    PrefixScorer,
    brute_force_rerank,
    ordered_subsets,
    random_instances,
    sequence_value,
)
from stcrank.testing import check_plugin
from stcrank_plugins.rerankers.beam_search import BeamSearchReranker
from stcrank_plugins.rerankers.exact import ExactReranker
from stcrank_plugins.rerankers.greedy import GreedyReranker


def test_full_width_beam_is_exhaustive_and_optimal():
    generator = torch.Generator().manual_seed(0)
    for n, k in ((4, 2), (5, 3), (6, 3), (6, 2), (3, 3)):
        value, continue_prob = random_instances(64, n, generator, negative=True)
        order = BeamSearchReranker(beam_size=math.perm(n, k))(value, continue_prob, k)
        best = sequence_value(value, continue_prob, ExactReranker()(value, continue_prob, k))
        assert torch.allclose(sequence_value(value, continue_prob, order), best, rtol=0, atol=1e-12), (n, k)


def test_beam_never_beats_exact():
    value, continue_prob = random_instances(64, 30, torch.Generator().manual_seed(1), negative=True)
    exact = sequence_value(value, continue_prob, ExactReranker()(value, continue_prob, 6))
    for beam_size in (1, 3, 10):
        beam = sequence_value(value, continue_prob, BeamSearchReranker(beam_size)(value, continue_prob, 6))
        assert (beam <= exact + 1e-12).all()


def test_wider_beams_help_on_average():
    generator = torch.Generator().manual_seed(2)
    value = torch.rand(256, 100, generator=generator, dtype=torch.float64) ** 3
    continue_prob = 0.5 + 0.48 * torch.rand(256, 100, generator=generator, dtype=torch.float64)
    values = [
        sequence_value(value, continue_prob, BeamSearchReranker(b)(value, continue_prob, 8)).mean() for b in (1, 5, 25)
    ]
    assert values[0] < values[1] <= values[2]


def test_beam_of_one_is_greedy():
    value, continue_prob = random_instances(64, 25, torch.Generator().manual_seed(3), negative=True)
    for k in (1, 4, 10):
        expected = GreedyReranker()(value, continue_prob, k)
        assert torch.equal(BeamSearchReranker(1)(value, continue_prob, k), expected)
        assert torch.equal(BeamSearchReranker(1, prune=False)(value, continue_prob, k), expected)


@pytest.mark.parametrize(("beam_size", "k"), [(2, 2), (3, 4), (5, 6), (8, 3), (25, 10), (40, 5)])
def test_pruning_changes_nothing(beam_size, k):
    generator = torch.Generator().manual_seed(beam_size * 100 + k)
    value, continue_prob = random_instances(32, 45, generator, negative=True)
    # many ties in value and many zero continuation probabilities (beams that stop growing in value)
    value[::3] = torch.floor(value[::3] * 3)
    continue_prob[::4, ::2] = 0.0
    pruned = BeamSearchReranker(beam_size)(value, continue_prob, k)
    assert torch.equal(pruned, BeamSearchReranker(beam_size, prune=False)(value, continue_prob, k))


def test_batched_equals_per_request():
    value, continue_prob = random_instances(12, 30, torch.Generator().manual_seed(4), negative=True)
    for reranker in (BeamSearchReranker(7), BeamSearchReranker(7, prune=False)):
        batched = reranker(value, continue_prob, 5)
        for r in range(12):
            assert torch.equal(reranker(value[r : r + 1], continue_prob[r : r + 1], 5), batched[r : r + 1])


def test_more_beams_than_lists():
    value, continue_prob = random_instances(8, 3, torch.Generator().manual_seed(5))
    order = BeamSearchReranker(100)(value, continue_prob, 3)
    best = brute_force_rerank(value, continue_prob, 3).value
    assert torch.allclose(sequence_value(value, continue_prob, order), best, atol=1e-12)


def penalised_brute_force(value, continue_prob, category, k, penalty):
    lists = ordered_subsets(value.shape[1], k)
    shown_category = category[:, lists]  # [R, L, k]
    repeats = (shown_category.unsqueeze(3) == shown_category.unsqueeze(2)).tril(-1).sum(3)
    worth = value[:, lists] - penalty * repeats
    reach = torch.ones_like(worth)
    reach[..., 1:] = torch.cumprod(continue_prob[:, lists][..., :-1], dim=2)
    return (reach * worth).sum(2).max(1).values


def run_diversity(value, continue_prob, category, k, penalty, beam_size, prune=True):
    reranker = BeamSearchReranker(beam_size, prefix_scorer=CategoryDiversityScorer(penalty), prune=prune)
    return reranker.search(value, continue_prob, k, context={"category": category})


def penalised_value(value, continue_prob, category, order, penalty):
    shown = category.gather(1, order)
    repeats = (shown.unsqueeze(2) == shown.unsqueeze(1)).tril(-1).sum(2)
    worth = value.gather(1, order) - penalty * repeats
    reach = torch.ones_like(worth)
    reach[:, 1:] = torch.cumprod(continue_prob.gather(1, order)[:, :-1], dim=1)
    return (reach * worth).sum(1)


def test_context_aware_scorer_with_full_width_optimises_its_own_objective():
    generator = torch.Generator().manual_seed(6)
    value, continue_prob = random_instances(48, 6, generator)
    category = torch.randint(0, 2, (48, 6), generator=generator)
    for k in (2, 3):
        order = run_diversity(value, continue_prob, category, k, 0.3, beam_size=math.perm(6, k))
        got = penalised_value(value, continue_prob, category, order, 0.3)
        best = penalised_brute_force(value, continue_prob, category, k, 0.3)
        assert torch.allclose(got, best, atol=1e-12)


def test_context_aware_scorer_changes_the_lists():
    generator = torch.Generator().manual_seed(7)
    value = torch.rand(32, 40, generator=generator)
    continue_prob = torch.full((32, 40), 0.9)
    category = torch.arange(40).expand(32, 40) % 4  # 10 items per category
    value[:, category[0] == 0] += 1.0  # category 0 holds the ten most valuable items
    plain = run_diversity(value, continue_prob, category, 4, 0.0, beam_size=5)
    assert torch.equal(plain, BeamSearchReranker(5)(value, continue_prob, 4))
    assert (category.gather(1, plain) == 0).all()
    diverse = run_diversity(value, continue_prob, category, 4, 10.0, beam_size=5)
    assert (category.gather(1, diverse).sort(1).values == torch.arange(4)).all()


def test_value_pruning_is_not_applied_to_context_aware_scorers():
    # the best diverse list needs an item far outside the top beam_size + k - 1 by value
    value = torch.tensor([[9.0, 8.0, 7.0, 6.0, 5.0, 4.0, 0.5]])
    continue_prob = torch.full((1, 7), 0.9)
    category = torch.tensor([[0, 0, 0, 0, 0, 0, 1]])
    order = run_diversity(value, continue_prob, category, 2, 100.0, beam_size=2)
    assert 6 in order.tolist()[0]
    assert torch.equal(order, run_diversity(value, continue_prob, category, 2, 100.0, beam_size=2, prune=False))


class ForbidCandidate(PrefixScorer):
    """Point-wise score, but one candidate (frame position of the original index 0) may never be shown."""

    required_context: ClassVar[tuple[str, ...]] = ("original_index",)

    def extend(self, state: BeamState, value, continue_prob, context: Mapping[str, torch.Tensor]):
        scores = torch.addcmul(state.score.unsqueeze(2), state.reach.unsqueeze(2), value.unsqueeze(1))
        return scores.masked_fill((context["original_index"] == 0).unsqueeze(1), float("-inf"))


def test_custom_scorer_plugs_in_and_can_forbid_items():
    value, continue_prob = random_instances(16, 6, torch.Generator().manual_seed(8))
    value[:, 0] = 100.0
    index = torch.arange(6).expand(16, 6)
    reranker = BeamSearchReranker(4, prefix_scorer=ForbidCandidate())
    order = reranker.search(value, continue_prob, 3, context={"original_index": index})
    assert (order != 0).all()
    with pytest.raises(ValueError, match="forbade every list"):
        reranker.search(value[:, :3], continue_prob[:, :3], 3, context={"original_index": index[:, :3]})


def test_errors():
    value, continue_prob = torch.rand(2, 5), torch.rand(2, 5)
    with pytest.raises(ValueError, match=r"missing \['category'\]"):
        BeamSearchReranker(3, prefix_scorer="category_diversity")(value, continue_prob, 2)
    with pytest.raises(ValueError, match="context 'category' must have"):
        run_diversity(value, continue_prob, torch.zeros(2, 4, dtype=torch.long), 2, 0.1, beam_size=3)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="beam_size"):
            BeamSearchReranker(bad)
    with pytest.raises(ValueError, match="unknown prefix scorer"):
        BeamSearchReranker(3, prefix_scorer="nope")
    with pytest.raises(ValueError, match="continue_prob must lie"):
        BeamSearchReranker(3)(value, continue_prob + 1, 2)
    with pytest.raises(ValueError, match="k must be"):
        BeamSearchReranker(3).search(value, continue_prob, 0)
    assert BeamSearchReranker(3)(torch.rand(0, 5), torch.rand(0, 5), 2).shape == (0, 2)


def test_registered_under_beam_search():
    reranker = registry.build("rerankers", "beam_search", beam_size=4, prefix_scorer="pointwise")
    assert isinstance(reranker, BeamSearchReranker) and reranker.beam_size == 4


def test_exhaustive_lists_are_all_distinct():
    value, continue_prob = random_instances(4, 5, torch.Generator().manual_seed(9))
    order = BeamSearchReranker(60)(value, continue_prob, 3)
    assert all(len(set(row)) == 3 for row in order.tolist())
    assert set(itertools.chain.from_iterable(order.tolist())) <= set(range(5))


def test_honours_the_reranker_contract():
    check_plugin("rerankers", "beam_search")
