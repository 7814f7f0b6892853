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
        model = DIN(SIZES, block_elements=1, **options)
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
    model = DIN(SIZES, competing=True, block_elements=1)
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
    [{"embedding_dim": 0}, {"attention_hidden": 0}, {"tower": [128, 0]}, {"tower": []}, {"block_elements": 0}],
    ids=lambda setting: next(iter(setting)),
)
def test_non_positive_sizes_are_refused_naming_the_option(setting):
    name = next(iter(setting))
    with pytest.raises(ConfigError, match=rf"^DIN: --model\.init_args\.network\.init_args\.{name} must"):
        DIN(SIZES, **setting)


# -- the per-request split against the per-row reference, on real batches of the data module ----------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("options", [{}, {"competing": True}, {"auxiliary_tower": True}], ids=str)
def test_per_request_split_equals_the_per_row_reference(real_batches, reference_networks, options, dtype):
    sizes, batches = real_batches[options.get("competing", False)]
    exposures = batches["exposures"]
    assert len(exposures["seq"]) < len(exposures["label"])  # the training batch shares requests between rows
    torch.manual_seed(0)
    model = reference_networks.perturbed(DIN(sizes, **options), dtype)
    tolerance = {"atol": 2e-5, "rtol": 1e-4} if dtype == torch.float32 else {"atol": 1e-10, "rtol": 1e-10}
    for kind in ("exposures", "extra_negatives", "aux_exposures", "test_exposures"):
        batch = batches[kind]
        got = model(batch)
        want = reference_networks.din_scores(model, batch, batch["item"].unsqueeze(1)).squeeze(1)
        torch.testing.assert_close(got, want, **tolerance, msg=kind)
    for kind in ("request_lists", "test_candidates"):
        batch = batches[kind]
        torch.testing.assert_close(
            model.score_candidates(batch), reference_networks.din_scores(model, batch, batch["candidates"]), **tolerance
        )
    batch = batches["aux_exposures"]
    torch.testing.assert_close(
        model.auxiliary_scores(batch), reference_networks.din_auxiliary_scores(model, batch), **tolerance
    )
    # Training: the gradients of every parameter too.
    model.zero_grad()
    (model(exposures).sum() + model.auxiliary_scores(batch).sum()).backward()
    got = reference_networks.grads(model)
    model.zero_grad()
    want = reference_networks.din_scores(model, exposures, exposures["item"].unsqueeze(1)).sum()
    (want + reference_networks.din_auxiliary_scores(model, batch).sum()).backward()
    want = reference_networks.grads(model)
    assert got.keys() == want.keys()
    for name in got:
        # Sums over every pair: float32 rounding grows with the gradient's scale (the attention logits' bias, whose
        # true gradient is 0 under the softmax, is pure rounding on both sides).
        scale = 1.0 + float(want[name].abs().max())
        torch.testing.assert_close(got[name], want[name], atol=tolerance["atol"] * scale * 10, rtol=tolerance["rtol"])


def test_blocks_of_rows_do_not_change_the_scores(real_batches, reference_networks):
    sizes, batches = real_batches[False]
    torch.manual_seed(0)
    whole = reference_networks.perturbed(DIN(sizes, block_elements=1 << 30), torch.float64)
    split = DIN(sizes, block_elements=1).to(torch.float64)  # one row per block
    split.load_state_dict(whole.state_dict())
    for kind, method in (("exposures", "forward"), ("test_candidates", "score_candidates")):
        batch = batches[kind]
        torch.testing.assert_close(getattr(split, method)(batch), getattr(whole, method)(batch), atol=1e-12, rtol=0)


def test_rows_of_one_request_score_like_that_request_alone():
    # A batch of three exposures of one request and one of another equals the same rows each sent on their own.
    torch.manual_seed(0)
    batch = _batch(b=2)
    shared = {key: batch[key] for key in ("context", "user", "seq", "seq_mask")}
    slot = torch.tensor([1, 0, 1, 1])
    items = torch.randint(1, 5, (4, 8))
    model = DIN(SIZES)
    got = model(dict(shared, item=items, request_slot=slot))
    alone = torch.stack(
        [
            model({k: v[s : s + 1] for k, v in shared.items()} | {"item": i[None]})[0]
            for s, i in zip(slot, items, strict=True)
        ]
    )
    torch.testing.assert_close(got, alone, atol=1e-6, rtol=1e-5)
