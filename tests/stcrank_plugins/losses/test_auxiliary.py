"""Tests of the auxiliary ranking loss plugin (RecFlow appendix, Eq. 2)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from stcrank import registry
from stcrank_plugins.losses.auxiliary import AuxiliaryRankingLoss


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def example():
    # Exposures (column 0): s=1 y=1, s=-1 y=0, s=0.5 y=1. Stage items: row 0 {0, 2}, row 1 {5, 0},
    # row 2 {1} plus a missing slot (NaN score).
    scores = torch.tensor([[1.0, 0.0, 2.0], [-1.0, 5.0, 0.0], [0.5, 1.0, float("nan")]], requires_grad=True)
    target = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [1.0, float("nan"), 0.0]])  # stage targets ignored
    mask = torch.tensor([[True, True, True], [True, True, True], [True, True, False]])
    return scores, target, mask


def test_hand_value():
    scores, target, mask = example()
    loss_fn = AuxiliaryRankingLoss(alpha=0.1)
    # BCE: (softplus(-1) + softplus(-1) + softplus(-0.5)) / 3 = 0.366867
    assert loss_fn.pointwise_term(scores, target, mask).item() == pytest.approx(0.3668667864, abs=1e-6)
    # BPR of the positive rows only: row 0: softplus(-1) + softplus(1); row 2: softplus(0.5); over 3 real pairs
    # (the negative row 1 and the missing slot are out) = 0.866867.
    assert loss_fn.ranking_term(scores, target, mask).item() == pytest.approx(0.8668667864, abs=1e-6)
    loss = loss_fn(scores, target, mask)
    assert loss.item() == pytest.approx(0.4535534650, abs=1e-6)  # 0.366867 + 0.1 * 0.866867
    loss.backward()
    assert torch.isfinite(scores.grad).all() and scores.grad[2, 2].item() == 0.0
    # Stage items of the negative exposure get no gradient: there is no ranking term for them.
    assert scores.grad[1, 1:].abs().sum().item() == 0.0


def test_reproduces_eq2_when_every_slot_is_real():
    gen = torch.Generator().manual_seed(0)
    n, k, alpha = 16, 5, 0.3
    scores = torch.randn(n, 1 + k, generator=gen)
    labels = (torch.rand(n, generator=gen) < 0.4).float()
    labels[0] = 1.0
    target = torch.zeros(n, 1 + k)
    target[:, 0] = labels
    mask = torch.ones(n, 1 + k, dtype=torch.bool)
    # Eq. 2: 1/N sum BCE(o_i, y_i) + alpha / (N_+ K) sum_{j positive} sum_k BPR(o_j, o_jk).
    bce = F.binary_cross_entropy_with_logits(scores[:, 0], labels)
    positive = scores[labels == 1]
    bpr = F.softplus(-(positive[:, :1] - positive[:, 1:])).sum() / (positive.shape[0] * k)
    loss = AuxiliaryRankingLoss(alpha=alpha)(scores, target, mask)
    assert loss.item() == pytest.approx((bce + alpha * bpr).item(), abs=1e-6)


def test_weights_and_missing_exposures():
    scores = torch.tensor([[1.0, 0.0], [2.0, 1.0], [9.0, 9.0]])
    target = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    mask = torch.tensor([[True, True], [True, True], [False, True]])  # row 2 has no exposure: ignored entirely
    weight = torch.tensor([[2.0, 0.0], [1.0, 0.0], [5.0, 0.0]])
    loss_fn = AuxiliaryRankingLoss(alpha=1.0)
    bce = (2 * softplus(-1) + softplus(-2)) / 3
    bpr = (2 * softplus(-1) + softplus(-1)) / 3
    assert loss_fn(scores, target, mask, weight).item() == pytest.approx(bce + bpr, abs=1e-6)


def test_no_positive_or_no_stage_item_leaves_only_bce():
    scores = torch.tensor([[0.0, 3.0], [1.0, 2.0]], requires_grad=True)
    target = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    mask = torch.tensor([[True, True], [True, False]])  # the only positive has no stage item
    loss = AuxiliaryRankingLoss(alpha=0.5)(scores, target, mask)
    assert loss.item() == pytest.approx((math.log(2) + softplus(-1)) / 2, abs=1e-6)
    loss.backward()
    assert torch.isfinite(scores.grad).all()
    single_column = AuxiliaryRankingLoss()(scores[:, :1], target[:, :1], mask[:, :1])
    assert single_column.item() == pytest.approx((math.log(2) + softplus(-1)) / 2, abs=1e-6)


def test_bad_inputs_raise():
    mask = torch.ones(1, 2, dtype=torch.bool)
    with pytest.raises(ValueError, match="NaN"):
        AuxiliaryRankingLoss()(torch.zeros(1, 2), torch.tensor([[float("nan"), 0.0]]), mask)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        AuxiliaryRankingLoss()(torch.zeros(1, 2), torch.tensor([[3.0, 0.0]]), mask)
    with pytest.raises(ValueError, match="alpha"):
        AuxiliaryRankingLoss(alpha=-1.0)


def test_registered_as_aux_ranking():
    assert registry.build("stcrank.losses", "aux_ranking", alpha=0.2).alpha == 0.2
