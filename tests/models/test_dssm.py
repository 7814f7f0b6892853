import pytest
import torch

from stcrank.errors import ConfigError
from stcrank.models.competing import competing_behaviours
from stcrank.models.dssm import DSSM, masked_mean

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


def _batch(b=4, c=6, seed=0, competing=False):
    g = torch.Generator().manual_seed(seed)
    seq = torch.randint(1, 10, (b, 50, 5), generator=g)
    mask = torch.zeros(b, 50, dtype=torch.bool)
    mask[:, -7:] = True
    seq = seq * mask[:, :, None]
    batch = {
        "context": torch.randint(1, 8, (b, 3), generator=g),
        "user": torch.randint(1, 4, (b, 5), generator=g),
        "item": torch.randint(1, 5, (b, 8), generator=g),
        "seq": seq,
        "seq_mask": mask,
        "candidates": torch.randint(1, 5, (b, c, 8), generator=g),
        "candidate_mask": torch.ones(b, c, dtype=torch.bool),
    }
    if competing:
        batch["competing"] = torch.randint(1, 9, (b, 50, 10, 5), generator=g)
        batch["competing_mask"] = mask[:, :, None] & (torch.arange(10) < 3)
    return batch


def test_masked_mean_ignores_padding():
    values = torch.tensor([[[1.0, 2.0], [100.0, 100.0], [3.0, 4.0]]])
    mask = torch.tensor([[True, False, True]])
    assert torch.allclose(masked_mean(values, mask), torch.tensor([[2.0, 3.0]]))
    assert torch.equal(masked_mean(values, torch.zeros(1, 3, dtype=torch.bool)), torch.zeros(1, 2))


def test_padding_values_never_change_the_user_vector():
    torch.manual_seed(0)
    model = DSSM(SIZES)
    batch = _batch()
    # Padded behaviours carrying ids (as category_level_one=0 did in the reference) must not leak.
    noisy = dict(batch, seq=torch.where(batch["seq_mask"][:, :, None], batch["seq"], torch.full_like(batch["seq"], 3)))
    assert torch.allclose(model.user_vector(batch), model.user_vector(noisy))


def test_score_candidates_matches_forward_per_item():
    torch.manual_seed(0)
    for competing in (False, True):
        model = DSSM(SIZES, competing=competing)
        batch = _batch(competing=competing)
        scores = model.score_candidates(batch)
        assert scores.shape == (4, 6)
        for j in range(6):
            one = dict(batch, item=batch["candidates"][:, j])
            assert torch.allclose(model(one), scores[:, j], atol=1e-5)


def test_competing_items_change_the_user_vector():
    torch.manual_seed(0)
    model = DSSM(SIZES, competing=True)
    batch = _batch(competing=True)
    other = dict(batch, competing=batch["competing"].roll(1, dims=0))
    assert not torch.allclose(model.user_vector(batch), model.user_vector(other))


def test_towers_must_meet():
    import pytest

    with pytest.raises(ValueError, match="same width"):
        DSSM(SIZES, user_tower=[16, 8], item_tower=[16, 4])


def test_competing_user_vector_matches_the_full_grid_reference():
    # Reference: the competing attention on the whole [B, 50, 10] grid, then the mean over real behaviours.
    torch.manual_seed(0)
    batch = _batch(competing=True)
    batch["competing_mask"] = batch["seq_mask"][:, :, None] & (torch.rand(4, 50, 10) > 0.6)
    for empty in ("zero", "behaviour"):
        model = DSSM(SIZES, competing=True, competing_empty=empty)
        embeddings = model.embeddings
        behaviours = embeddings.behaviour(batch["seq"]).flatten(-2)
        refined = model.competing(competing_behaviours(embeddings, batch), batch["competing_mask"], behaviours)
        parts = [
            embeddings.context(batch["context"]).flatten(-2),
            embeddings.user(batch["user"]).flatten(-2),
            masked_mean(behaviours, batch["seq_mask"]),
            masked_mean(refined, batch["seq_mask"]),
        ]
        expected = model.user_tower(torch.cat(parts, -1))
        assert torch.allclose(model.user_vector(batch), expected, atol=1e-6)


@pytest.mark.parametrize(
    "setting",
    [{"embedding_dim": 0}, {"user_tower": [64, 0]}, {"item_tower": []}, {"competing_hidden": 0}],
    ids=lambda setting: next(iter(setting)),
)
def test_non_positive_sizes_are_refused_naming_the_option(setting):
    name = next(iter(setting))
    with pytest.raises(ConfigError, match=rf"^DSSM: --model\.init_args\.network\.init_args\.{name} must"):
        DSSM(SIZES, **setting)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("competing", [False, True])
def test_per_request_user_vectors_equal_the_per_row_reference(real_batches, reference_networks, competing, dtype):
    sizes, batches = real_batches[competing]
    exposures = batches["exposures"]
    assert len(exposures["seq"]) < len(exposures["label"])  # the training batch shares requests between rows
    torch.manual_seed(0)
    model = reference_networks.perturbed(DSSM(sizes, competing=competing, block_elements=1000), dtype)
    tolerance = {"atol": 2e-5, "rtol": 1e-4} if dtype == torch.float32 else {"atol": 1e-10, "rtol": 1e-10}
    for kind in ("exposures", "extra_negatives", "aux_exposures", "test_exposures"):
        batch = batches[kind]
        want = reference_networks.dssm_scores(model, batch, batch["item"].unsqueeze(1)).squeeze(1)
        torch.testing.assert_close(model(batch), want, **tolerance, msg=kind)
    for kind in ("request_lists", "test_candidates"):
        batch = batches[kind]
        want = reference_networks.dssm_scores(model, batch, batch["candidates"])
        torch.testing.assert_close(model.score_candidates(batch), want, **tolerance, msg=kind)
    model.zero_grad()
    model(exposures).sum().backward()
    got = reference_networks.grads(model)
    model.zero_grad()
    reference_networks.dssm_scores(model, exposures, exposures["item"].unsqueeze(1)).sum().backward()
    want = reference_networks.grads(model)
    assert got.keys() == want.keys()
    for name in got:
        scale = 1.0 + float(want[name].abs().max())
        torch.testing.assert_close(got[name], want[name], atol=tolerance["atol"] * scale * 10, rtol=tolerance["rtol"])
