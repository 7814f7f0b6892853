import pytest
import torch

from stcrank import registry
from stcrank.rerank import random_instances
from stcrank.testing import check_plugin
from stcrank_plugins.rerankers.greedy import GreedyReranker


def test_top_k_by_value_with_ties_to_the_lower_index():
    value = torch.tensor([[0.2, 0.9, 0.5, 0.9, 0.5, 0.1]])
    assert GreedyReranker()(value, torch.rand(1, 6), 4).tolist() == [[1, 3, 2, 4]]


def test_ignores_continue_prob_and_matches_a_stable_sort():
    value, continue_prob = random_instances(40, 12, torch.Generator().manual_seed(0))
    expected = torch.sort(value, dim=1, descending=True, stable=True).indices[:, :5]
    assert torch.equal(GreedyReranker()(value, continue_prob, 5), expected)
    assert torch.equal(GreedyReranker()(value, torch.zeros_like(continue_prob), 5), expected)


def test_batched_equals_per_request():
    value, continue_prob = random_instances(10, 30, torch.Generator().manual_seed(1), negative=True)
    batched = GreedyReranker()(value, continue_prob, 7)
    for r in range(10):
        assert torch.equal(GreedyReranker()(value[r : r + 1], continue_prob[r : r + 1], 7), batched[r : r + 1])


def test_validation():
    value = torch.rand(2, 4)
    value[1, 1] = torch.nan
    with pytest.raises(ValueError, match="value contains NaN at request 1, candidate 1"):
        GreedyReranker()(value, torch.rand(2, 4), 2)
    with pytest.raises(ValueError, match="k must be"):
        GreedyReranker()(torch.rand(2, 4), torch.rand(2, 4), 5)


def test_registered_under_greedy():
    assert isinstance(registry.build("rerankers", "greedy"), GreedyReranker)


def test_honours_the_reranker_contract():
    check_plugin("rerankers", "greedy")
