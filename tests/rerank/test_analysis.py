import math

import pytest
import torch

from stcrank.rerank import (
    hit_rate_at_k,
    hit_rate_table,
    position_agreement_at_k,
    relative_gap,
    rerank_change_rates,
)

POINTWISE = torch.tensor([[0, 1, 2, 3]])
RERANKED = torch.tensor([[2, 0, 5, 1]])


@pytest.mark.parametrize(("k", "expected"), [(1, 0.0), (2, 0.5), (3, 2 / 3), (4, 0.75)])
def test_hit_rate_by_hand(k, expected):
    assert hit_rate_at_k(POINTWISE, RERANKED, k).item() == pytest.approx(expected)


def test_hit_rate_averages_over_requests_and_accepts_longer_lists():
    pointwise = torch.tensor([[0, 1, 2, 9, 8], [4, 3, 2, 1, 0]])
    reranked = torch.tensor([[1, 0, 7], [4, 3, 2]])
    per_request = hit_rate_at_k(pointwise, reranked, 3, reduction="none")
    assert torch.allclose(per_request, torch.tensor([2 / 3, 1.0]))
    assert hit_rate_at_k(pointwise, reranked, 3).item() == pytest.approx(5 / 6)


def test_permutation_keeps_the_set_but_not_the_positions():
    pointwise = torch.tensor([[0, 1, 2, 3]])
    reranked = torch.tensor([[3, 2, 1, 0]])
    assert hit_rate_at_k(pointwise, reranked, 4).item() == 1.0
    assert hit_rate_at_k(pointwise, reranked, 1).item() == 0.0
    assert position_agreement_at_k(pointwise, reranked, 4).item() == 0.0
    assert position_agreement_at_k(POINTWISE, torch.tensor([[0, 5, 2, 1]]), 4).item() == 0.5


def test_change_rates_split_requests():
    pointwise = torch.tensor([[0, 1, 2], [0, 1, 2], [0, 1, 2], [0, 1, 2]])
    reranked = torch.tensor([[0, 1, 2], [1, 0, 2], [0, 1, 7], [2, 1, 0]])
    rates = rerank_change_rates(pointwise, reranked, 3)
    assert rates.unchanged.item() == pytest.approx(0.25)
    assert rates.order_only.item() == pytest.approx(0.5)
    assert rates.set_changed.item() == pytest.approx(0.25)
    assert (rates.unchanged + rates.order_only + rates.set_changed).item() == pytest.approx(1.0)


def test_hit_rate_table_layout():
    table = hit_rate_table(POINTWISE, RERANKED, ks=(1, 2, 4))
    assert list(table) == ["hit@1", "hit@2", "hit@4"]
    assert table["hit@4"] == pytest.approx(0.75)


def test_relative_gap():
    reference = torch.tensor([2.0, 0.0, 0.0, -4.0, 1.0])
    value = torch.tensor([1.5, 0.0, 1.0, -5.0, 1.0])
    gap = relative_gap(reference, value)
    assert gap[0].item() == pytest.approx(0.25)
    assert gap[1].item() == 0.0
    assert math.isinf(gap[2].item()) and gap[2].item() < 0
    assert gap[3].item() == pytest.approx(0.25)
    assert gap[4].item() == 0.0
    with pytest.raises(ValueError, match="same shape"):
        relative_gap(reference, value[:2])


def test_errors():
    with pytest.raises(ValueError, match=r"k must be in \[1, 3\]"):
        hit_rate_at_k(POINTWISE, RERANKED[:, :3], 4)
    with pytest.raises(ValueError, match="requests"):
        hit_rate_at_k(torch.zeros(2, 3, dtype=torch.long), torch.zeros(3, 3, dtype=torch.long), 2)
    with pytest.raises(TypeError, match="reranked_order"):
        hit_rate_at_k(POINTWISE, RERANKED.float(), 2)
    with pytest.raises(ValueError, match="reduction"):
        hit_rate_at_k(POINTWISE, RERANKED, 2, reduction="sum")
    with pytest.raises(ValueError, match="empty batch"):
        hit_rate_at_k(torch.zeros(0, 3, dtype=torch.long), torch.zeros(0, 3, dtype=torch.long), 2)
    with pytest.raises(ValueError, match=r"\[R, K\]"):
        hit_rate_at_k(torch.zeros(3, dtype=torch.long), RERANKED, 1)


def test_a_list_repeating_an_item_is_refused():
    pointwise = torch.tensor([[0, 1, 2]])
    with pytest.raises(ValueError, match="reranked_order repeats candidate 0 in request 0"):
        hit_rate_at_k(pointwise, torch.tensor([[0, 0, 1]]), 2)  # would count item 0 twice
