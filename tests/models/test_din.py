import pytest
import torch

from stcrank.errors import ConfigError
from stcrank.models.competing import competing_behaviours
from stcrank.models.din import DIN

SIZES = dict.fromkeys(
    [
        "wday",
        "hour",
        "minute",
        "user_id",
        "device_id",
        "gender",
        "age",
        "province",
        "video_id",
        "author_id",
        "category_level_two",
        "category_level_one",
        "upload_type",
    ],
    64,
)


def _batch(b=3, c=5, k=4):
    g = torch.Generator().manual_seed(1)
    mask = torch.zeros(b, 50, dtype=torch.bool)
    mask[:, -6:] = True
    return {
        "context": torch.randint(1, 8, (b, 3), generator=g),
        "user": torch.randint(1, 4, (b, 5), generator=g),
        "item": torch.randint(1, 5, (b, 8), generator=g),
        "seq": torch.randint(1, 10, (b, 50, 5), generator=g) * mask[:, :, None],
        "seq_mask": mask,
        "candidates": torch.randint(1, 5, (b, c, 8), generator=g),
        "aux_items": torch.randint(1, 5, (b, k, 8), generator=g),
        "aux_mask": torch.ones(b, k, dtype=torch.bool),
        "competing": torch.randint(1, 9, (b, 50, 10, 5), generator=g),
        "competing_mask": mask[:, :, None] & (torch.arange(10) < 4),
    }


def test_variants_score_candidates_like_forward():
    torch.manual_seed(0)
    batch = _batch()
    for options in ({}, {"competing": True}, {"auxiliary_tower": True}):
        model = DIN(SIZES, candidate_chunk=2, **options)
        scores = model.score_candidates(batch)
        for j in range(scores.shape[1]):
            assert torch.allclose(model(dict(batch, item=batch["candidates"][:, j])), scores[:, j], atol=1e-5)


def test_baseline_parameters_unchanged_by_the_options():
    # Checkpoints of the baseline keep loading: the variants only add modules when enabled.
    assert DIN(SIZES).state_dict().keys() == DIN(SIZES, competing_hidden=7, auxiliary_hidden=9).state_dict().keys()


def test_competing_items_are_the_keys():
    torch.manual_seed(0)
    batch = _batch()
    model = DIN(SIZES, competing=True)
    other = dict(batch, competing=batch["competing"].roll(1, dims=0))
    assert not torch.allclose(model(batch), model(other))
    plain = DIN(SIZES)
    assert torch.equal(plain(batch), plain(other))  # the baseline ignores competing items


def test_auxiliary_scores_use_the_two_tower_and_share_embeddings():
    torch.manual_seed(0)
    batch = _batch()
    model = DIN(SIZES, auxiliary_tower=True)
    scores = model.auxiliary_scores(batch)
    assert scores.shape == (3, 5) and (scores.abs() <= 1 + 1e-6).all()
    scores.sum().backward()
    assert model.embeddings.tables["video_id"].weight.grad.abs().sum() > 0
    assert model.tower[0].weight.grad is None  # the CTR tower takes no part
    plain = DIN(SIZES)
    items = torch.cat([batch["item"][:, None], batch["aux_items"]], 1)
    assert torch.allclose(plain.auxiliary_scores(batch), plain.score_candidates(dict(batch, candidates=items)))


def test_competing_scores_match_the_full_grid_reference():
    # Reference: the competing attention on the whole [B, 50, 10] grid, then the DIN formula.
    torch.manual_seed(0)
    batch = _batch()
    batch["competing_mask"] = batch["seq_mask"][:, :, None] & (torch.rand(3, 50, 10) > 0.6)
    model = DIN(SIZES, competing=True, candidate_chunk=2)
    embeddings = model.embeddings
    request = torch.cat([embeddings.context(batch["context"]), embeddings.user(batch["user"])], -2).flatten(-2)
    behaviours = embeddings.behaviour(batch["seq"]).flatten(-2)
    keys = model.competing(competing_behaviours(embeddings, batch), batch["competing_mask"], behaviours)
    item = embeddings.item(batch["candidates"])
    interest = model.attention(keys, batch["seq_mask"], item[..., :5, :].flatten(-2))
    tower_input = torch.cat([request[:, None].expand(-1, 5, -1), interest, item.flatten(-2)], -1)
    assert torch.allclose(model.score_candidates(batch), model.tower(tower_input).squeeze(-1), atol=1e-6)


@pytest.mark.parametrize(
    "setting",
    [{"embedding_dim": 0}, {"attention_hidden": 0}, {"tower": [128, 0]}, {"tower": []}, {"candidate_chunk": -1}],
    ids=lambda setting: next(iter(setting)),
)
def test_non_positive_sizes_are_refused_naming_the_option(setting):
    name = next(iter(setting))
    with pytest.raises(ConfigError, match=rf"^DIN: --model\.init_args\.network\.init_args\.{name} must"):
        DIN(SIZES, **setting)
