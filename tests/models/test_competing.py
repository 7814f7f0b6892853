import pytest
import torch

from stcrank.models.competing import CompetingAttention


def _attention(empty="zero"):
    torch.manual_seed(0)
    return CompetingAttention(width=2, hidden=4, empty=empty)


def test_hand_example_weights_and_masking():
    attention = _attention()
    competing = torch.tensor([[[[1.0, 0.0], [0.0, 1.0], [50.0, 50.0]], [[2.0, 2.0], [9.0, 9.0], [9.0, 9.0]]]])
    mask = torch.tensor([[[True, True, False], [True, False, False]]])
    behaviours = torch.tensor([[[0.5, -0.5], [1.0, 1.0]]])
    out = attention(competing, mask, behaviours)
    # Hand computation: logits of the real items only, softmax over them, weighted sum.
    for b in range(2):
        real = competing[0, b][mask[0, b]]
        hidden = torch.relu(
            torch.cat([real, behaviours[0, b].expand(len(real), 2)], -1) @ attention.first.weight.T
            + attention.first.bias
        )
        weights = torch.softmax((hidden @ attention.second.weight.T + attention.second.bias).squeeze(-1), 0)
        assert torch.allclose(out[0, b], (weights[:, None] * real).sum(0), atol=1e-6)
    assert torch.allclose(out[0, 1], torch.tensor([2.0, 2.0]))  # a single real item gets all the weight


def test_behaviour_without_competing_items():
    competing = torch.ones(1, 2, 3, 2)
    mask = torch.tensor([[[True, False, False], [False, False, False]]])
    behaviours = torch.tensor([[[0.5, -0.5], [7.0, 8.0]]])
    assert torch.equal(_attention("zero")(competing, mask, behaviours)[0, 1], torch.zeros(2))
    assert torch.equal(_attention("behaviour")(competing, mask, behaviours)[0, 1], torch.tensor([7.0, 8.0]))


def test_padding_values_do_not_matter_and_no_nan_gradient():
    attention = _attention()
    competing = torch.randn(2, 4, 3, 2, requires_grad=True)
    mask = torch.rand(2, 4, 3) > 0.5
    behaviours = torch.randn(2, 4, 2)
    out = attention(competing, mask, behaviours)
    noisy = torch.where(mask[..., None], competing, torch.full_like(competing, 1e4))
    assert torch.allclose(out, attention(noisy, mask, behaviours))
    out.sum().backward()
    assert torch.isfinite(competing.grad).all()
    assert torch.equal(competing.grad[~mask], torch.zeros_like(competing.grad[~mask]))


def test_invalid_empty_option():
    with pytest.raises(ValueError, match="empty"):
        CompetingAttention(2, empty="mean")
