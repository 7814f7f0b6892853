import math

import pytest
import torch

from stcrank import registry
from stcrank_plugins.losses.two_stage.icc import ICCLoss

from .helpers import stacked, with_padding


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_hand_value():
    # First stage keeps 2 of s1 = 3, 2, 1 (kappa 2): I1 = 1, 1/2, 0. Second keeps 1 of s2 = 0, 5, 4 (kappa 5):
    # I2 = 0, 1/2, 0. Ensemble f = (1 - I1) s1 + I1 I2 s2 = 0, 1 + 1.25, 1.
    relevance, mask = torch.tensor([[30.0, 7.0, 5.0]], dtype=torch.float64), torch.ones(1, 3, dtype=torch.bool)
    scores = stacked([3.0, 2.0, 1.0], [0.0, 5.0, 4.0])
    loss_fn = ICCLoss(first_k=2, second_k=1)
    torch.testing.assert_close(
        loss_fn.ensemble(scores[:, 0], scores[:, 1], mask), torch.tensor([[0.0, 2.25, 1.0]], dtype=torch.float64)
    )
    expected = (softplus(2.25) + softplus(1.0) + softplus(-1.25)) / 3  # pairs 0>1, 0>2, 1>2
    assert loss_fn(scores, relevance, mask).item() == pytest.approx(expected)  # 1.304726


def test_gradient_lifts_the_relevant_item_in_the_stage_that_drops_it():
    relevance, mask = torch.tensor([[30.0, 7.0, 5.0]], dtype=torch.float64), torch.ones(1, 3, dtype=torch.bool)
    # Item 0 is dropped by the first stage (I1 ~ 0): only its first-stage score reaches the ensemble.
    scores = stacked([-1.0, 2.0, 1.0], [9.0, 0.0, 0.0])
    ICCLoss(first_k=2, second_k=1)(scores, relevance, mask).backward()
    assert scores.grad[0, 0, 0] < 0
    assert scores.grad[0, 1, 0].abs().item() < 1e-12


def test_padding_and_equal_relevance_never_pair():
    relevance = torch.tensor([[30.0, 7.0, 7.0]], dtype=torch.float64)
    mask = torch.ones(1, 3, dtype=torch.bool)
    scores = stacked([3.0, 2.0, 1.0], [0.0, 5.0, 4.0])
    loss = ICCLoss(first_k=2, second_k=1)(scores, relevance, mask)
    assert loss.item() == pytest.approx((softplus(2.25) + softplus(1.0)) / 2)
    padded, padded_relevance, padded_mask = with_padding(scores, relevance, mask)
    padded_loss = ICCLoss(first_k=2, second_k=1)(padded, padded_relevance, padded_mask)
    assert padded_loss.item() == pytest.approx(loss.item())
    padded_loss.backward()
    assert padded.grad[..., 3:].abs().sum().item() == 0.0


def test_entry_point_and_arguments():
    assert isinstance(registry.build("losses", "icc"), ICCLoss)
    with pytest.raises(ValueError, match="sigma"):
        ICCLoss(sigma=0)
