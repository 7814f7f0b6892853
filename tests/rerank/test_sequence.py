import pytest
import torch

from stcrank.rerank import continue_products, sequence_value


def test_hand_computed_value():
    value = torch.tensor([[1.0, 2.0, 3.0]])
    continue_prob = torch.tensor([[0.5, 0.2, 1.0]])
    order = torch.tensor([[2, 0, 1]])
    # slots seen with 1, s_2 = 1.0, s_2 * s_0 = 0.5
    assert torch.allclose(continue_products(continue_prob, order), torch.tensor([[1.0, 1.0, 0.5]]))
    assert torch.allclose(sequence_value(value, continue_prob, order), torch.tensor([3.0 + 1.0 + 0.5 * 2.0]))


def test_exit_hides_the_rest_of_the_list():
    value = torch.tensor([[5.0, 7.0, 11.0]])
    continue_prob = torch.tensor([[0.0, 0.3, 0.9]])
    assert sequence_value(value, continue_prob, torch.tensor([[0, 1, 2]])).item() == 5.0
    assert sequence_value(value, continue_prob, torch.tensor([[1, 0, 2]])).item() == pytest.approx(7.0 + 0.3 * 5.0)


def test_single_slot_is_the_item_value():
    value = torch.rand(4, 6)
    order = torch.tensor([[3], [0], [5], [2]])
    expected = value.gather(1, order).squeeze(1)
    assert torch.equal(sequence_value(value, torch.rand(4, 6), order), expected)


def test_batch_matches_a_loop_over_requests():
    generator = torch.Generator().manual_seed(3)
    value = torch.rand(20, 9, generator=generator, dtype=torch.float64)
    continue_prob = torch.rand(20, 9, generator=generator, dtype=torch.float64)
    order = torch.stack([torch.randperm(9, generator=generator)[:5] for _ in range(20)])
    got = sequence_value(value, continue_prob, order)
    for r in range(20):
        total, seen = 0.0, 1.0
        for j in order[r].tolist():
            total += seen * value[r, j].item()
            seen *= continue_prob[r, j].item()
        assert got[r].item() == pytest.approx(total, rel=1e-12)
    assert got.dtype == torch.float64


def test_errors_name_the_problem():
    value, continue_prob = torch.rand(2, 4), torch.rand(2, 4)
    with pytest.raises(ValueError, match="value and continue_prob"):
        sequence_value(value, torch.rand(2, 5), torch.tensor([[0], [1]]))
    with pytest.raises(ValueError, match="outside"):
        sequence_value(value, continue_prob, torch.tensor([[0, 4], [1, 2]]))
    with pytest.raises(ValueError, match="outside"):
        sequence_value(value, continue_prob, torch.tensor([[0, -1], [1, 2]]))
    with pytest.raises(TypeError, match="integer"):
        sequence_value(value, continue_prob, torch.tensor([[0.0], [1.0]]))
    with pytest.raises(ValueError, match=r"R=2"):
        sequence_value(value, continue_prob, torch.tensor([[0, 1]]))
    with pytest.raises(ValueError, match=r"\[R, n\]"):
        continue_products(torch.rand(4), torch.tensor([[0]]))
