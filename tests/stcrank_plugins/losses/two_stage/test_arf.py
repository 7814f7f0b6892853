import math

import pytest
import torch

from stcrank import registry
from stcrank_plugins.losses.two_stage.arf import ARFLoss

from .helpers import stacked, with_padding


def log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


def test_two_item_closed_form():
    # Two items, the first is the ground truth (size 1), each stage keeps 1: P = [[p, 1-p], [1-p, p]] with
    # p = sigmoid(d / tau). L_relax = -(1/2) log p; L_global = -(1/4) 2 log p; with w = 1: -0.75 log p per stage.
    tau = 2.0
    relevance, mask = torch.tensor([[2.0, 1.0]], dtype=torch.float64), torch.ones(1, 2, dtype=torch.bool)
    scores = stacked([1.0, 0.0], [0.0, 3.0])
    loss_fn = ARFLoss(size=1, first_k=1, second_k=1, tau=tau, eps=1e-12)
    expected = -0.75 * (log_sigmoid(1 / tau) + log_sigmoid(-3 / tau))
    assert loss_fn(scores, relevance, mask).item() == pytest.approx(expected, rel=1e-9)


def test_gradient_lifts_the_ground_truth_and_fits_the_weight():
    relevance, mask = torch.tensor([[2.0, 1.0]], dtype=torch.float64), torch.ones(1, 2, dtype=torch.bool)
    scores = stacked([1.0, 0.0], [0.0, 3.0])
    loss_fn = ARFLoss(size=1, first_k=1, second_k=1, tau=2.0)
    loss_fn(scores, relevance, mask).backward()
    assert (scores.grad[0, :, 0] < 0).all() and (scores.grad[0, :, 1] > 0).all()
    # d/dw (0.5 / w^2 G + log w) at w = 1 is 1 - G: the weight shrinks when the global term exceeds 1.
    global_second = -0.5 * log_sigmoid(-3 / 2.0)
    assert loss_fn.global_weight.grad[1].item() == pytest.approx(1 - global_second, abs=1e-5)


def test_relaxed_recall_applies_only_to_lists_longer_than_the_kept_set():
    relevance, mask = torch.tensor([[2.0, 1.0]], dtype=torch.float64), torch.ones(1, 2, dtype=torch.bool)
    scores = stacked([1.0, 0.0], [0.0, 3.0])
    # Each stage keeps 2 of 2: only the global term remains, -0.5 log p per stage, halved by w = 1.
    loss = ARFLoss(size=1, first_k=2, second_k=2, tau=2.0, eps=1e-12)(scores, relevance, mask)
    assert loss.item() == pytest.approx(-0.25 * (log_sigmoid(0.5) + log_sigmoid(-1.5)), rel=1e-9)


def test_padding_is_ignored():
    relevance = torch.tensor([[30.0, 7.0, 6.0, 5.0]], dtype=torch.float64)
    mask = torch.ones(1, 4, dtype=torch.bool)
    scores = stacked([1.0, 0.5, 0.2, -1.0], [0.3, 0.0, 2.0, 1.0])
    loss_fn = ARFLoss(size=1, first_k=2, second_k=1, tau=1.0)
    padded, padded_relevance, padded_mask = with_padding(scores, relevance, mask)
    loss = loss_fn(padded, padded_relevance, padded_mask)
    assert loss.item() == pytest.approx(loss_fn(scores, relevance, mask).item())
    loss.backward()
    assert padded.grad[..., 4:].abs().sum().item() == 0.0


def test_entry_point():
    loss = registry.build("losses", "arf")
    assert isinstance(loss, ARFLoss) and loss.tau == 200.0


def reference_arf_stage(scores, relevance, size, support, tau):
    """One stage of ARF transcribed from the reference (full lists, weight 1, eps 1e-6)."""
    from stcrank_plugins.losses.two_stage.sorting import neural_sort

    mask = torch.ones_like(relevance, dtype=torch.bool)
    labels = neural_sort(relevance, mask, 1e-4)
    permutation = neural_sort(scores, mask, tau)
    target = permutation[:, :support, :].mean(1)
    relax = (-torch.log(target + 1e-6) * labels[:, :size, :].sum(1)).mean(-1).mean()
    global_ = (-torch.log(permutation + 1e-6) * labels).mean(-1).mean(-1).mean()
    return 0.5 * global_ + relax


def test_matches_a_transcription_of_the_reference_on_full_lists():
    generator = torch.Generator().manual_seed(4)
    relevance = torch.tensor([[30.0, 29.0, 28.0, 7.0, 7.0, 7.0, 6.0, 6.0, 6.0, 5.0, 5.0, 5.0]] * 3, dtype=torch.float64)
    scores = torch.randn(3, 2, 12, generator=generator, dtype=torch.float64) * 3
    mask = torch.ones(3, 12, dtype=torch.bool)
    ours = ARFLoss(size=3, first_k=8, second_k=5, tau=2.0)(scores, relevance, mask)
    expected = reference_arf_stage(scores[:, 0], relevance, 3, 8, 2.0) + reference_arf_stage(
        scores[:, 1], relevance, 3, 5, 2.0
    )
    assert ours.item() == pytest.approx(expected.item(), rel=1e-5)
