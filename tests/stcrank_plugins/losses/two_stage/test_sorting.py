import itertools
import math

import pytest
import torch

from stcrank.metrics.cascade import ground_truth
from stcrank_plugins.losses.two_stage.sorting import label_permutation, neural_sort, soft_sort, top_k_probability


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


@pytest.mark.parametrize("relax", [neural_sort, soft_sort])
def test_hard_limit_is_the_sorting_permutation_and_padding_is_excluded(relax):
    scores = torch.tensor([[0.3, 2.0, -1.0, 7.0, 0.9]], dtype=torch.float64)
    mask = torch.tensor([[True, True, True, False, True]])
    permutation = relax(scores, mask, 1e-3)
    expected = torch.zeros(1, 5, 5, dtype=torch.float64)
    for rank, item in enumerate([1, 4, 0, 2]):  # item 3 is padding: never ranked, row 4 is empty
        expected[0, rank, item] = 1.0
    torch.testing.assert_close(permutation, expected)


@pytest.mark.parametrize("relax", [neural_sort, soft_sort])
def test_rows_are_distributions_over_real_items(relax):
    generator = torch.Generator().manual_seed(0)
    scores = torch.randn(3, 6, generator=generator, dtype=torch.float64)
    mask = torch.rand(3, 6, generator=generator) < 0.7
    permutation = relax(scores, mask, 0.7)
    n = mask.sum(-1)
    for row in range(3):
        sums = permutation[row].sum(-1)
        torch.testing.assert_close(sums[: n[row]], torch.ones(int(n[row]), dtype=torch.float64))
        assert sums[n[row] :].abs().sum().item() == 0.0
        assert permutation[row][:, ~mask[row]].abs().sum().item() == 0.0


def test_neural_sort_of_two_items_in_closed_form():
    # Row 1: softmax(s / tau) (|a - b| is common); row 2: softmax(-s / tau).
    a, b, tau = 1.5, 0.5, 2.0
    permutation = neural_sort(torch.tensor([[a, b]], dtype=torch.float64), torch.ones(1, 2, dtype=torch.bool), tau)
    top = sigmoid((a - b) / tau)
    torch.testing.assert_close(permutation[0], torch.tensor([[top, 1 - top], [1 - top, top]], dtype=torch.float64))


def test_neural_sort_matches_a_loop_over_its_definition():
    generator = torch.Generator().manual_seed(1)
    scores = torch.randn(2, 5, generator=generator, dtype=torch.float64)
    mask = torch.tensor([[True] * 5, [True, False, True, True, False]])
    permutation = neural_sort(scores, mask, 0.9)
    for row in range(2):
        items = mask[row].nonzero().flatten().tolist()
        s = [scores[row, i].item() for i in items]
        n = len(s)
        for r in range(1, n + 1):
            logits = [((n + 1 - 2 * r) * s[i] - sum(abs(s[i] - s[j]) for j in range(n))) / 0.9 for i in range(n)]
            top = max(logits)
            weights = [math.exp(v - top) for v in logits]
            for position, item in enumerate(items):
                assert permutation[row, r - 1, item].item() == pytest.approx(weights[position] / sum(weights))


def test_label_permutation_shares_tied_ranks_and_matches_the_ground_truth():
    relevance = torch.tensor([[8.0, 7.0, 7.0, 5.0, 7.0]])
    mask = torch.tensor([[True, True, True, True, False]])
    labels = label_permutation(relevance, mask)
    expected = torch.tensor(
        [[1, 0, 0, 0, 0], [0, 0.5, 0.5, 0, 0], [0, 0.5, 0.5, 0, 0], [0, 0, 0, 1, 0], [0, 0, 0, 0, 0]]
    ).unsqueeze(0)
    torch.testing.assert_close(labels, expected)
    # The first `size` rows sum to the ground-truth membership; NeuralSort of the labels tends to the same matrix.
    for size in range(1, 5):
        torch.testing.assert_close(labels[:, :size].sum(1), ground_truth(relevance, mask, size))
    torch.testing.assert_close(neural_sort(relevance.double(), mask, 1e-4), labels.double(), atol=1e-6, rtol=0)


def test_top_k_probability():
    permutation = neural_sort(torch.tensor([[2.0, 1.0, 0.0]]), torch.ones(1, 3, dtype=torch.bool), 1e-3)
    assert top_k_probability(permutation, torch.ones(1, 3, dtype=torch.bool), 2).tolist() == [[1.0, 1.0, 0.0]]
    # Every item of a list no longer than k is kept.
    mask = torch.tensor([[True, False, True]])
    permutation = neural_sort(torch.tensor([[2.0, 1.0, 0.0]]), mask, 5.0)
    torch.testing.assert_close(top_k_probability(permutation, mask, 2), torch.tensor([[1.0, 0.0, 1.0]]))


def test_relaxed_top_k_probability_sums_to_k_in_the_hard_limit():
    for scores in itertools.permutations([0.0, 1.0, 2.0, 3.0]):
        permutation = neural_sort(torch.tensor([scores]), torch.ones(1, 4, dtype=torch.bool), 1e-3)
        assert top_k_probability(permutation, torch.ones(1, 4, dtype=torch.bool), 3).sum().item() == pytest.approx(3)
