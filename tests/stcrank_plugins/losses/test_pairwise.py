"""Tests of the BPR loss plugin and the shared pair machinery."""

from __future__ import annotations

import math

import pytest
import torch

from stcrank import registry
from stcrank_plugins.losses.pairwise import BPRLoss, gather_pairs


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_one_positive_in_column_zero():
    # SASRec layout: positive s=2 against negatives 1, 3, 0.
    scores = torch.tensor([[2.0, 1.0, 3.0, 0.0]])
    target = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    mask = torch.ones(1, 4, dtype=torch.bool)
    # (softplus(-1) + softplus(1) + softplus(-2)) / 3 = (0.313262 + 1.313262 + 0.126928) / 3 = 0.584484
    assert BPRLoss()(scores, target, mask).item() == pytest.approx(0.5844837954, abs=1e-6)
    reference = -torch.nn.functional.logsigmoid(scores[:, :1] - scores[:, 1:]).mean()
    assert BPRLoss()(scores, target, mask).item() == pytest.approx(reference.item(), abs=1e-6)


def test_several_positives_and_padding():
    scores = torch.tensor([[2.0, 1.0, 3.0, 0.0], [1.0, 0.0, 2.0, float("inf")]], requires_grad=True)
    target = torch.tensor([[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
    mask = torch.tensor([[True] * 4, [True, True, True, False]])
    loss = BPRLoss()(scores, target, mask)
    # Row 0: 0.313262 + 1.313262 + 0.126928. Row 1: positives 1 and 0 vs the negative 2 (the padded inf is out):
    # softplus(1) + softplus(2) = 1.313262 + 2.126928. Mean over 5 pairs = 1.038728.
    assert loss.item() == pytest.approx(1.0387282169, abs=1e-6)
    loss.backward()
    assert torch.isfinite(scores.grad).all() and scores.grad[1, 3].item() == 0.0


def test_weights_weigh_pairs_by_the_positive():
    scores = torch.tensor([[2.0, 1.0], [0.0, 1.0]])
    target = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    mask = torch.ones(2, 2, dtype=torch.bool)
    weight = torch.tensor([[3.0, 9.0], [1.0, 9.0]])  # the negatives' weights do not matter
    expected = (3 * softplus(-1) + softplus(1)) / 4
    assert BPRLoss()(scores, target, mask, weight).item() == pytest.approx(expected, abs=1e-6)


def test_no_pair_is_zero_with_gradient():
    scores = torch.randn(2, 3, requires_grad=True)
    loss = BPRLoss()(scores, torch.zeros(2, 3), torch.ones(2, 3, dtype=torch.bool))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(scores.grad, torch.zeros(2, 3))
    all_positive = BPRLoss()(scores, torch.ones(2, 3), torch.ones(2, 3, dtype=torch.bool))
    assert all_positive.item() == 0.0


def test_matches_brute_force_loop():
    gen = torch.Generator().manual_seed(0)
    scores = torch.randn(6, 7, generator=gen)
    target = (torch.rand(6, 7, generator=gen) < 0.3).float()
    mask = torch.rand(6, 7, generator=gen) < 0.8
    terms = [
        softplus(-(scores[b, i] - scores[b, j]).item())
        for b in range(6)
        for i in range(7)
        for j in range(7)
        if mask[b, i] and mask[b, j] and target[b, i] > 0 and target[b, j] == 0
    ]
    assert BPRLoss()(scores, target, mask).item() == pytest.approx(sum(terms) / len(terms), abs=1e-5)


def test_gather_pairs_shape_uses_only_upper_items():
    scores = torch.zeros(3, 201)
    target = torch.zeros(3, 201)
    target[:, 0] = 1
    mask = torch.ones(3, 201, dtype=torch.bool)
    pairs = gather_pairs(scores, target, mask, target > 0, lambda ti, tj: (ti > 0) & (tj == 0))
    assert pairs.loss.shape == (3, 1, 201)
    assert pairs.valid.sum().item() == 3 * 200


def test_registered_as_bpr():
    assert isinstance(registry.build("stcrank.losses", "bpr"), BPRLoss)
