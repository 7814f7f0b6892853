import math

import pytest
import torch

from stcrank import registry
from stcrank_plugins.losses.two_stage.lcron import LCRONLoss

from .helpers import stacked, with_padding


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def closed_form(d1: float, d2: float, tau: float) -> float:
    # Two items, item 0 is the ground truth (size 1), cut-offs 1: p_m = sigmoid(d_m / tau) for item 0 and
    # 1 - p_m for item 1. q_0 = p1 p2, q_1 = (1 - p1)(1 - p2).
    p1, p2 = sigmoid(d1 / tau), sigmoid(d2 / tau)
    e2e = (-math.log(p1 * p2) - math.log(1 - (1 - p1) * (1 - p2))) / 2
    single_1 = (-math.log(p1) - math.log(1 - (1 - p1))) / 2
    single_2 = (-math.log(p2) - math.log(1 - (1 - p2))) / 2
    return 0.5 * single_1 + 0.5 * single_2 + e2e


def test_two_item_closed_form():
    relevance, mask = torch.tensor([[2.0, 1.0]], dtype=torch.float64), torch.ones(1, 2, dtype=torch.bool)
    scores = stacked([1.0, 0.0], [0.0, 3.0])
    loss_fn = LCRONLoss(size=1, tau=2.0, eps=1e-12)
    assert loss_fn(scores, relevance, mask).item() == pytest.approx(closed_form(1.0, -3.0, 2.0), rel=1e-9)
    terms = loss_fn.terms(scores[:, 0], scores[:, 1], relevance, mask)
    assert set(terms) == {"e2e", "single_first", "single_second"}


def test_gradient_lifts_the_ground_truth_in_both_stages():
    relevance = torch.tensor([[30.0, 29.0, 7.0, 6.0, 5.0]], dtype=torch.float64)
    mask = torch.ones(1, 5, dtype=torch.bool)
    scores = stacked([0.1, -0.2, 0.3, 0.0, 0.2], [0.0, 0.1, 0.2, -0.1, 0.3])
    loss_fn = LCRONLoss(size=2, first_k=3, second_k=2, tau=1.0)
    loss_fn(scores, relevance, mask).backward()
    grad = scores.grad[0]
    assert (grad[:, :2] < 0).all()  # the two ground-truth items go up in both stages
    # The others go down on the whole (one may rise: the first stage keeps 3, so one non-truth slot is free).
    assert (grad[:, 2:].sum(-1) > 0).all()


def test_end_to_end_term_rewards_stages_that_cooperate():
    # The same item scored highest by both stages survives the cascade; split between the stages it does not.
    relevance, mask = torch.tensor([[2.0, 1.0, 1.0]], dtype=torch.float64), torch.ones(1, 3, dtype=torch.bool)
    loss_fn = LCRONLoss(size=1, tau=0.5)
    agree = loss_fn.terms(*stacked([3.0, 0.0, 0.0], [3.0, 0.0, 0.0], requires_grad=False)[0], relevance, mask)
    split = loss_fn.terms(*stacked([3.0, 0.0, 0.0], [0.0, 3.0, 0.0], requires_grad=False)[0], relevance, mask)
    assert agree["e2e"] < split["e2e"]


@pytest.mark.parametrize("sort", ["neural_sort", "soft_sort"])
def test_padding_is_ignored(sort):
    relevance = torch.tensor([[30.0, 7.0, 6.0, 5.0]], dtype=torch.float64)
    mask = torch.ones(1, 4, dtype=torch.bool)
    scores = stacked([1.0, 0.5, 0.2, -1.0], [0.3, 0.0, 2.0, 1.0])
    loss_fn = LCRONLoss(size=1, first_k=2, second_k=1, tau=1.0, sort=sort)
    padded, padded_relevance, padded_mask = with_padding(scores, relevance, mask)
    loss = loss_fn(padded, padded_relevance, padded_mask)
    assert loss.item() == pytest.approx(loss_fn(scores, relevance, mask).item())
    loss.backward()
    assert padded.grad[..., 4:].abs().sum().item() == 0.0
    assert torch.isfinite(loss_fn.stage_weight.grad).all()


def test_negative_weight_does_not_give_nan():
    loss_fn = LCRONLoss(size=1, tau=1.0)
    with torch.no_grad():
        loss_fn.stage_weight.copy_(torch.tensor([-0.5, 1.0]))
    relevance, mask = torch.tensor([[2.0, 1.0]]), torch.ones(1, 2, dtype=torch.bool)
    assert torch.isfinite(loss_fn(stacked([1.0, 0.0], [0.0, 1.0], torch.float32), relevance, mask))


def test_entry_point_and_defaults():
    loss = registry.build("losses", "lcron")
    assert isinstance(loss, LCRONLoss)
    assert (loss.size, loss.first_k, loss.second_k, loss.tau, loss.sort) == (10, 10, 10, 50.0, "neural_sort")
    with pytest.raises(ValueError, match="sort"):
        LCRONLoss(sort="bubble")


def reference_lcron(first, second, relevance, size, tau):
    """LCRON's two-stage loss transcribed step by step from the reference (full lists, weights 1, eps 1e-6)."""
    from stcrank_plugins.losses.two_stage.sorting import neural_sort

    mask = torch.ones_like(relevance, dtype=torch.bool)
    labels = neural_sort(relevance, mask, 1e-4)  # the reference's label permutation (not thresholded)
    truth = labels[:, :size, :].sum(1)

    def kept(permutation, k):
        return permutation[:, :k, :].sum(1) / (permutation.detach().sum(1) + 1e-6)

    def dropped(permutation, k):
        return permutation[:, k:, :].sum(1) / (permutation.detach().sum(1) + 1e-6)

    p1, p2 = neural_sort(first, mask, tau), neural_sort(second, mask, tau)
    up = (-torch.log(kept(p1, size) * kept(p2, size) + 1e-6) * truth).mean(-1)
    down_survive = (1 - dropped(p1, size)) * (1 - dropped(p2, size))
    down = (-torch.log(1 - down_survive + 1e-6) * (1 - truth).clamp(0, 1)).mean(-1)
    joint = (up + down).mean()

    def single(permutation):
        rest = labels[:, size:, :].sum(1)
        loss = (-torch.log(kept(permutation, size) + 1e-6) * truth).mean(-1)
        loss = loss + (-torch.log(dropped(permutation, size) + 1e-6) * rest).mean(-1)
        return loss.mean()

    return 0.5 * single(p2) + 0.5 * single(p1) + joint


def test_matches_a_transcription_of_the_reference_on_full_lists():
    generator = torch.Generator().manual_seed(3)
    relevance = torch.tensor([[30.0, 29.0, 28.0, 7.0, 7.0, 7.0, 6.0, 6.0, 6.0, 5.0, 5.0, 5.0]] * 3, dtype=torch.float64)
    scores = torch.randn(3, 2, 12, generator=generator, dtype=torch.float64) * 3
    mask = torch.ones(3, 12, dtype=torch.bool)
    ours = LCRONLoss(size=3, tau=2.0)(scores, relevance, mask)
    expected = reference_lcron(scores[:, 0], scores[:, 1], relevance, 3, 2.0)
    assert ours.item() == pytest.approx(expected.item(), rel=1e-5)
