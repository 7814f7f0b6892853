import torch

from stcrank.testing import check_plugin
from stcrank_example.focal import FocalLoss
from stcrank_example.ratio import RatioReranker


def test_focal_loss_honours_the_loss_contract():
    check_plugin("losses", FocalLoss)


def test_ratio_reranker_honours_the_reranker_contract():
    check_plugin("rerankers", RatioReranker)


def test_focal_with_gamma_zero_is_bce():
    scores, target = torch.tensor([[0.3, -1.2]]), torch.tensor([[1.0, 0.0]])
    mask = torch.ones_like(target, dtype=torch.bool)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(scores, target)
    assert torch.allclose(FocalLoss(gamma=0.0)(scores, target, mask), expected)


def test_ratio_orders_by_value_per_exit_probability():
    value = torch.tensor([[1.0, 0.5, 0.2]])
    continue_prob = torch.tensor([[0.0, 0.9, 0.99]])  # ratios 1, 5, 20
    assert RatioReranker()(value, continue_prob, 2).tolist() == [[2, 1]]
