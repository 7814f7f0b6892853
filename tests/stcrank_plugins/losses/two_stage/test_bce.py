import math

import pytest
import torch

from stcrank import registry
from stcrank_plugins.losses.two_stage.bce import TwoStageBCELoss

from .helpers import stacked, with_padding


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_hand_value_and_gradient_direction():
    # Relevance 30, 7, 5: levels 3 (positive), 2 (rank_neg), 0 (prerank_neg).
    relevance, mask = torch.tensor([[30.0, 7.0, 5.0]], dtype=torch.float64), torch.ones(1, 3, dtype=torch.bool)
    scores = stacked([2.0, 0.0, -1.0], [1.0, 3.0, 9.0])
    loss = TwoStageBCELoss()(scores, relevance, mask)
    first = (softplus(-2) + math.log(2) + softplus(-1)) / 3  # every candidate
    second = (softplus(-1) + softplus(3)) / 2  # the positive and rank_neg only: 9.0 is not seen
    assert loss.item() == pytest.approx(first + second)  # 2.058703
    loss.backward()
    grad = scores.grad[0]
    assert grad[0, 0] < 0 < grad[0, 1]  # the positive goes up, the negatives down, in both stages
    assert grad[1, 0] < 0 < grad[1, 1]
    assert grad[1, 2].item() == 0.0  # the pre-rank tower never learns on prerank_neg


def test_padding_is_ignored():
    relevance, mask = torch.tensor([[30.0, 7.0, 5.0]], dtype=torch.float64), torch.ones(1, 3, dtype=torch.bool)
    scores = stacked([2.0, 0.0, -1.0], [1.0, 3.0, 9.0])
    padded, padded_relevance, padded_mask = with_padding(scores, relevance, mask)
    loss = TwoStageBCELoss()(padded, padded_relevance, padded_mask)
    assert loss.item() == pytest.approx(TwoStageBCELoss()(scores, relevance, mask).item())
    loss.backward()
    assert padded.grad[..., 3:].abs().sum().item() == 0.0


def test_entry_point():
    assert isinstance(registry.build("losses", "two_stage_bce"), TwoStageBCELoss)
