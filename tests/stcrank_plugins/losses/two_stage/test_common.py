import pytest
import torch

from stcrank_plugins.losses.two_stage.bce import TwoStageBCELoss
from stcrank_plugins.losses.two_stage.common import kth_largest, stage_levels, top_k_mask


def test_stage_levels_follow_lcron_grades():
    relevance = torch.tensor([[30.0, 21.0, 8.0, 7.0, 6.0, 5.0, 40.0]])
    mask = torch.tensor([[True] * 6 + [False]])
    assert stage_levels(relevance, mask, (7.0, 5.0, 6.0)).tolist() == [[3, 3, 3, 2, 1, 0, 0]]


def test_kth_largest_and_top_k_mask():
    scores = torch.tensor([[3.0, 1.0, 2.0, 9.0], [1.0, 2.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True, True, False], [True, True, False, False]])
    assert kth_largest(scores, mask, 2).flatten().tolist() == [2.0, 1.0]
    assert kth_largest(scores, mask, 3).flatten().tolist() == [1.0, -float("inf")]
    assert top_k_mask(scores, mask, 2).tolist() == [[True, False, True, False], [True, True, False, False]]
    assert top_k_mask(scores, mask, 1, largest=False).tolist() == [[False, True, False, False], [True] + [False] * 3]


def test_inputs_are_checked():
    loss = TwoStageBCELoss()
    relevance, mask = torch.ones(1, 3), torch.ones(1, 3, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"scores must be \[B, 2, L\]"):
        loss(torch.zeros(1, 3), relevance, mask)
    with pytest.raises(ValueError, match="target and mask must be"):
        loss(torch.zeros(1, 2, 3), torch.ones(1, 4), mask)
    with pytest.raises(ValueError, match="mask must be a bool"):
        loss(torch.zeros(1, 2, 3), relevance, mask.long())
    with pytest.raises(ValueError, match="no sample weights"):
        loss(torch.zeros(1, 2, 3), relevance, mask, torch.ones(1, 3))
    with pytest.raises(ValueError, match="relevance"):
        loss(torch.zeros(1, 2, 3), torch.tensor([[1.0, float("nan"), 1.0]]), mask)
    with pytest.raises(ValueError, match="scores hold NaN"):
        loss(torch.tensor([[[0.0, 0.0, 0.0], [0.0, float("nan"), 0.0]]]), relevance, mask)
