import pytest
import torch

from stcrank.errors import ConfigError
from stcrank.models.sasrec import SASRec

SIZES = {"video_id": 60}


def _model(seed: int = 0, **kwargs) -> SASRec:
    torch.manual_seed(seed)
    return SASRec(SIZES, **kwargs).eval()


def _batch(lengths: list[int], length: int = 50, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    seq = torch.randint(1, SIZES["video_id"], (len(lengths), length), generator=generator)
    mask = torch.arange(length)[None, :] >= (length - torch.tensor(lengths))[:, None]  # left-padded
    return seq * mask, mask


def test_causal_a_later_behaviour_does_not_change_earlier_positions():
    model = _model(num_blocks=2, num_heads=2, embedding_dim=8)
    seq, mask = _batch([50, 30])
    hidden = model.encode(seq, mask)
    changed = seq.clone()
    changed[:, 40] = seq[:, 40] % 59 + 1  # another id in 1..59
    assert bool((changed[:, 40] != seq[:, 40]).all())
    again = model.encode(changed, mask)
    assert torch.allclose(hidden[:, :40], again[:, :40], atol=1e-6)
    assert not torch.allclose(hidden[:, 40:], again[:, 40:], atol=1e-4)


def test_padding_content_does_not_change_the_user_vector():
    model = _model()
    seq, mask = _batch([12, 1, 49])
    garbage = torch.where(mask, seq, torch.randint(1, 60, seq.shape, generator=torch.Generator().manual_seed(5)))
    assert torch.allclose(model.user_vector(seq, mask), model.user_vector(garbage, mask), atol=1e-6)


def test_a_shorter_sequence_is_the_same_user_as_its_padded_form():
    model = _model()
    seq, mask = _batch([10])
    assert torch.allclose(model.user_vector(seq, mask), model.user_vector(seq[:, -10:], mask[:, -10:]), atol=1e-6)


def test_padding_comes_from_the_mask_not_from_zero_sum_embeddings():
    # A real behaviour whose embedding plus position sums to zero must still count (the reference masks it).
    model = _model()
    seq, mask = _batch([5])
    with torch.no_grad():
        model.item_embedding.weight[seq[0, -2]] = -model.position_embedding.weight[48]
    without = mask.clone()
    without[0, -2] = False
    assert not torch.allclose(model.user_vector(seq, mask), model.user_vector(seq, without), atol=1e-4)


def test_an_empty_history_gives_a_finite_vector_and_gradients():
    model = _model().train()
    seq, mask = _batch([0, 3])
    items = torch.tensor([[1, 2, 3], [4, 5, 6]])
    scores = model(seq, mask, items)
    assert torch.isfinite(scores).all()
    scores.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_score_is_the_dot_product_of_user_and_item_vectors():
    model = _model()
    seq, mask = _batch([20, 7])
    items = torch.tensor([[3, 9, 0], [1, 2, 59]])
    expected = (model.user_vector(seq, mask)[:, None, :] * model.item_vectors(items)).sum(-1)
    assert torch.allclose(model(seq, mask, items), expected, atol=1e-6)
    assert bool((model.item_vectors(torch.tensor([0])) == 0).all())  # padding id embeds to zero


def test_bad_configuration_and_inputs_are_refused():
    with pytest.raises(ValueError, match="video_id"):
        SASRec({"author_id": 5})
    with pytest.raises(ValueError, match="divisible"):
        SASRec(SIZES, embedding_dim=8, num_heads=3)
    model = _model()
    seq, mask = _batch([3], length=51)
    with pytest.raises(ValueError, match="max_len"):
        model.encode(seq, mask)
    with pytest.raises(ValueError, match=r"\[B, L\]"):
        model.encode(seq[0], mask[0])


@pytest.mark.parametrize(
    "setting",
    [{"embedding_dim": 0}, {"max_len": 0}, {"num_blocks": 0}, {"num_heads": 0}, {"dropout": -0.1}],
    ids=lambda setting: next(iter(setting)),
)
def test_invalid_sizes_are_refused_naming_the_option(setting):
    name = next(iter(setting))
    with pytest.raises(ConfigError, match=rf"^SASRec: --model\.init_args\.network\.init_args\.{name} must"):
        SASRec(SIZES, **setting)
