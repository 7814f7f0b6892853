import pytest
import torch

from stcrank.models.competing import CompetingAttention, refined_behaviours
from stcrank.models.features import CONTEXT_FEATURES, ITEM_FEATURES, SEQUENCE_FEATURES, USER_FEATURES, RecFlowEmbeddings

SIZES = dict.fromkeys(CONTEXT_FEATURES + USER_FEATURES + ITEM_FEATURES, 9)


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


def _reference(attention, embeddings, batch, behaviours):
    # Straightforward definition on the full [B, L, K] grid: concatenation, MLP, masked softmax, weighted sum.
    competing = embeddings.behaviour(batch["competing"]).flatten(-2)
    mask = batch["competing_mask"]
    pairs = torch.cat([competing, behaviours.unsqueeze(-2).expand_as(competing)], -1)
    logits = attention.second(torch.relu(attention.first(pairs))).squeeze(-1).masked_fill(~mask, -1e9)
    refined = (torch.softmax(logits, -1).unsqueeze(-1) * mask.unsqueeze(-1) * competing).sum(-2)
    if attention.empty == "behaviour":
        refined = torch.where(mask.any(-1, keepdim=True), refined, behaviours)
    return refined


def _grid_batch(seed=0):
    # Behaviours with and without items, items not in a prefix, ids on padding, a trailing all-padding column.
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(3, 6, 5, generator=g) > 0.5
    mask[0, 1] = False
    mask[..., -1] = False
    return {"competing": torch.randint(0, 9, (3, 6, 5, 5), generator=g), "competing_mask": mask}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("empty", ["zero", "behaviour"])
def test_refined_behaviours_match_the_reference_values_and_gradients(empty, dtype):
    torch.manual_seed(0)
    embeddings = RecFlowEmbeddings(SIZES, embedding_dim=3).to(dtype)
    attention = CompetingAttention(15, hidden=7, empty=empty).to(dtype)
    batch = _grid_batch()
    behaviours = torch.randn(3, 6, 15, dtype=dtype, requires_grad=True)
    leaves = [behaviours, *attention.parameters(), *(embeddings.tables[name].weight for name in SEQUENCE_FEATURES)]
    expected = _reference(attention, embeddings, batch, behaviours)
    expected_grads = torch.autograd.grad(expected.square().sum(), leaves)
    got = refined_behaviours(attention, embeddings, batch, behaviours)
    grads = torch.autograd.grad(got.square().sum(), leaves)
    # float32 differs by summation order only; float64 shows that nothing else differs.
    tolerance = {"atol": 1e-5, "rtol": 1e-5} if dtype == torch.float32 else {"atol": 1e-12, "rtol": 0.0}
    assert torch.allclose(got, expected, atol=1e-6 if dtype == torch.float32 else 1e-12, rtol=0.0)
    for grad, expected_grad in zip(grads, expected_grads, strict=True):
        assert torch.allclose(grad, expected_grad, **tolerance)


def test_refined_behaviours_without_any_competing_item():
    embeddings = RecFlowEmbeddings(SIZES, embedding_dim=3)
    batch = dict(_grid_batch(), competing_mask=torch.zeros(3, 6, 5, dtype=torch.bool))
    behaviours = torch.randn(3, 6, 15)
    assert torch.equal(
        refined_behaviours(_attention_of(15, "zero"), embeddings, batch, behaviours), torch.zeros(3, 6, 15)
    )
    assert torch.equal(refined_behaviours(_attention_of(15, "behaviour"), embeddings, batch, behaviours), behaviours)


def _attention_of(width, empty):
    torch.manual_seed(0)
    return CompetingAttention(width, hidden=4, empty=empty)
