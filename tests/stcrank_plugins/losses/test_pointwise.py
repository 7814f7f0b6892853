"""Tests of the point-wise BCE loss plugin."""

from __future__ import annotations

import math

import pytest
import torch

from stcrank import registry
from stcrank.plugins import Loss
from stcrank_plugins.losses.pointwise import BCELoss


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def example():
    # Real items: (s=0, y=1), (s=2, y=0), (s=-1, y=0); the fourth item is padding with NaN score and label.
    scores = torch.tensor([[0.0, 2.0], [-1.0, float("nan")]], requires_grad=True)
    target = torch.tensor([[1.0, 0.0], [0.0, float("nan")]])
    mask = torch.tensor([[True, True], [True, False]])
    return scores, target, mask


def test_hand_value_and_padding_does_not_leak():
    scores, target, mask = example()
    loss = BCELoss()(scores, target, mask)
    # (ln 2 + softplus(2) + softplus(-1)) / 3 = (0.693147 + 2.126928 + 0.313262) / 3 = 1.044446
    assert loss.item() == pytest.approx(1.0444456264, abs=1e-6)
    loss.backward()
    assert torch.isfinite(scores.grad).all()
    assert scores.grad[1, 1].item() == 0.0
    # d/ds BCE = sigmoid(s) - y, divided by the 3 real items.
    assert scores.grad[0, 0].item() == pytest.approx((0.5 - 1) / 3)


def test_weights_and_pos_weight():
    scores, target, mask = example()
    weight = torch.tensor([[1.0, 2.0], [1.0, 100.0]])  # the padded item's weight is ignored
    # (ln 2 + 2 softplus(2) + softplus(-1)) / (1 + 2 + 1) = 1.315066
    assert BCELoss()(scores, target, mask, weight).item() == pytest.approx(1.3150662225, abs=1e-6)
    # pos_weight 3 multiplies the positive term: (3 ln 2 + softplus(2) + softplus(-1)) / 3 = 1.506544
    assert BCELoss(pos_weight=3.0)(scores, target, mask).item() == pytest.approx(1.5065437467, abs=1e-6)
    expected = (math.log(2) + softplus(2) + softplus(-1)) / 3
    assert BCELoss()(scores, target, mask).item() == pytest.approx(expected, abs=1e-6)


def test_empty_batch_is_zero_with_gradient():
    scores = torch.randn(2, 3, requires_grad=True)
    loss = BCELoss()(scores, torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.bool))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(scores.grad, torch.zeros(2, 3))
    zero_weight = BCELoss()(scores, torch.zeros(2, 3), torch.ones(2, 3, dtype=torch.bool), torch.zeros(2, 3))
    assert zero_weight.item() == 0.0


def test_bad_inputs_raise():
    scores = torch.zeros(1, 2)
    mask = torch.ones(1, 2, dtype=torch.bool)
    with pytest.raises(ValueError, match="NaN"):
        BCELoss()(scores, torch.tensor([[float("nan"), 0.0]]), mask)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        BCELoss()(scores, torch.tensor([[2.0, 0.0]]), mask)
    with pytest.raises(ValueError, match="same shape"):
        BCELoss()(scores, torch.zeros(1, 3), mask)
    with pytest.raises(ValueError, match="bool"):
        BCELoss()(scores, torch.zeros(1, 2), torch.ones(1, 2))
    with pytest.raises(ValueError, match="pos_weight"):
        BCELoss(pos_weight=0.0)


def test_registered_as_bce():
    loss = registry.build("stcrank.losses", "bce", pos_weight=2.0)
    assert isinstance(loss, BCELoss) and isinstance(loss, Loss)
    assert loss.pos_weight == 2.0
