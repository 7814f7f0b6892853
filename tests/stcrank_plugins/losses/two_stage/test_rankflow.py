import math

import pytest
import torch

from stcrank import registry
from stcrank_plugins.losses.two_stage.rankflow import RankFlowLoss

from .helpers import stacked, with_padding


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


RELEVANCE = torch.tensor([[30.0, 7.0, 5.0]], dtype=torch.float64)
MASK = torch.ones(1, 3, dtype=torch.bool)


def test_hand_value():
    # The first stage keeps 2 of s1 = 0, 1, 2: items 1 and 2. Labels 1, 0, 0.
    scores = stacked([0.0, 1.0, 2.0], [5.0, 0.0, 1.0])
    retrieval = (math.log(2) + softplus(1) + softplus(2)) / 3
    prerank = (math.log(2) + softplus(1)) / 2  # items 1 and 2 only
    distill = ((1 - 0) ** 2 + (2 - 1) ** 2) / 2
    loss = RankFlowLoss(first_k=2)(scores, RELEVANCE, MASK)
    assert loss.item() == pytest.approx(retrieval + prerank + distill)  # 3.380983
    # alpha = 1: no distillation; the second stage's best kept item (2) against its worst (1) on s1: gap 1.
    ranked = RankFlowLoss(first_k=2, alpha=1.0, upper=1, lower=1)(scores, RELEVANCE, MASK)
    assert ranked.item() == pytest.approx(retrieval + prerank + softplus(-1))


def test_gradient_directions():
    scores = stacked([0.0, 1.0, 2.0], [5.0, 0.0, 1.0])
    RankFlowLoss(first_k=2)(scores, RELEVANCE, MASK).backward()
    grad = scores.grad[0]
    assert grad[1, 0].item() == 0.0  # the second stage never sees what the first dropped
    assert grad[0, 0] < 0  # the first stage lifts the positive
    # Distillation moves s1 towards the (detached) second-stage scores: item 2 (s1 2 > s2 1) is pulled down.
    assert grad[0, 2] > 0


def test_padding_is_ignored():
    scores = stacked([0.0, 1.0, 2.0], [5.0, 0.0, 1.0])
    padded, relevance, mask = with_padding(scores, RELEVANCE, MASK)
    loss = RankFlowLoss(first_k=2)(padded, relevance, mask)
    assert loss.item() == pytest.approx(RankFlowLoss(first_k=2)(scores, RELEVANCE, MASK).item())
    loss.backward()
    assert padded.grad[..., 3:].abs().sum().item() == 0.0


def test_entry_point_and_arguments():
    assert isinstance(registry.build("losses", "rankflow"), RankFlowLoss)
    with pytest.raises(ValueError, match="alpha"):
        RankFlowLoss(alpha=2.0)
