import math

import pytest
import torch

from stcrank.rerank import brute_force_rerank, ordered_subsets, random_instances, sequence_value


def test_ordered_subsets_enumerates_each_list_once():
    lists = ordered_subsets(5, 3)
    assert lists.shape == (math.perm(5, 3), 3)
    assert len({tuple(row) for row in lists.tolist()}) == lists.shape[0]
    assert all(len(set(row)) == 3 for row in lists.tolist())
    with pytest.raises(ValueError, match="too many"):
        ordered_subsets(20, 10)
    with pytest.raises(ValueError, match="k must be"):
        ordered_subsets(3, 4)


def test_two_items_by_hand():
    # a = (v 1, s 0.9) first: 1 + 0.9 * 2 = 2.8; b = (v 2, s 0.1) first: 2 + 0.1 = 2.1
    result = brute_force_rerank(torch.tensor([[1.0, 2.0]]), torch.tensor([[0.9, 0.1]]), 2)
    assert result.order.tolist() == [[0, 1]]
    assert result.value.item() == pytest.approx(2.8)


def test_value_matches_sequence_value():
    value, continue_prob = random_instances(12, 6, torch.Generator().manual_seed(1), negative=True)
    result = brute_force_rerank(value, continue_prob, 3)
    assert torch.allclose(sequence_value(value, continue_prob, result.order), result.value)


def test_random_instances_hold_the_edge_cases():
    value, continue_prob = random_instances(40, 8, torch.Generator().manual_seed(2), negative=True)
    assert (continue_prob == 0).any() and (continue_prob == 1).any()
    assert (value == 0).any() and (value < 0).any()
    assert value.dtype == torch.float64
