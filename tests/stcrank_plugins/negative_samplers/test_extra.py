import pytest
import torch

from stcrank import registry
from stcrank.data.recflow.schema import STAGE_PRIORITY
from stcrank_plugins.negative_samplers.extra import StageExtraNegativeSampler


def _pools():
    # Ids encode the stage: rank_neg 100+, coarse_neg 200+, rank_pos 300+ (never chosen below).
    rank_neg = torch.tensor([[101, 102, 103, 104, 105], [106, 107, 0, 0, 0], [0, 0, 0, 0, 0]])
    coarse_neg = torch.tensor([[201, 202, 203], [204, 205, 206], [207, 0, 0]])
    rank_pos = torch.tensor([[301, 302, 0], [303, 0, 0], [304, 305, 306]])
    return {"rank_neg": rank_neg, "coarse_neg": coarse_neg, "rank_pos": rank_pos}


def _draw(sampler, seed=0, targets=None):
    targets = torch.zeros(3, dtype=torch.long) if targets is None else targets
    return sampler.sample(_pools(), targets, torch.Generator().manual_seed(seed))


def test_draws_only_chosen_stages_without_replacement():
    sampler = StageExtraNegativeSampler(["rank_neg", "coarse_neg"], per_stage=2)
    for seed in range(20):
        out = _draw(sampler, seed)
        assert out.items.shape == (3, 4)
        assert torch.equal(out.mask, torch.tensor([[1, 1, 1, 1], [1, 1, 1, 1], [0, 0, 1, 0]], dtype=torch.bool))
        for row in range(3):
            drawn = out.items[row][out.mask[row]].tolist()
            assert len(drawn) == len(set(drawn))  # never the same row twice
            assert all(100 < i < 300 for i in drawn)  # rank_pos is not chosen
            assert set(out.items[row, :2][out.mask[row, :2]].tolist()) <= set(_pools()["rank_neg"][row].tolist())
        assert torch.equal(out.items[~out.mask], torch.zeros_like(out.items[~out.mask]))
        assert torch.equal(
            out.priority[0], torch.tensor([STAGE_PRIORITY["rank_neg"]] * 2 + [STAGE_PRIORITY["coarse_neg"]] * 2)
        )


def test_deterministic_and_uniform():
    sampler = StageExtraNegativeSampler(["rank_neg"], per_stage=1)
    assert torch.equal(_draw(sampler, 3).items, _draw(sampler, 3).items)
    counts = torch.zeros(6)
    for seed in range(600):
        counts[_draw(sampler, seed).items[0, 0] - 100] += 1
    assert counts[0] == 0 and (counts[1:] > 80).all()  # each of the 5 items about 120 times


def test_all_rows_and_target_exclusion():
    everything = _draw(StageExtraNegativeSampler(["rank_neg"], per_stage=None))
    assert torch.equal(everything.items, _pools()["rank_neg"])
    assert torch.equal(everything.mask, _pools()["rank_neg"] != 0)
    out = _draw(StageExtraNegativeSampler(["coarse_neg"], per_stage=3), targets=torch.tensor([202, 0, 0]))
    assert 202 not in out.items[0].tolist() and int(out.mask[0].sum()) == 2


def test_entry_point_and_errors():
    assert isinstance(
        registry.build("negative_samplers", "stage_extra", stages=["rank_neg"]), StageExtraNegativeSampler
    )
    with pytest.raises(ValueError, match="unknown stages"):
        StageExtraNegativeSampler(["nope"])
    with pytest.raises(ValueError, match="per_stage"):
        StageExtraNegativeSampler(["rank_neg"], per_stage=0)
    with pytest.raises(KeyError, match="no pool"):
        StageExtraNegativeSampler(["rank_pos", "prerank_neg"]).sample(
            _pools(), torch.zeros(3, dtype=torch.long), torch.Generator()
        )


def test_global_draw_is_uniform_without_replacement():
    sampler = StageExtraNegativeSampler(["rank_neg", "coarse_neg"], per_stage=2, scope="global")
    hits = torch.zeros(30)
    for seed in range(3000):
        drawn = sampler.sample_global({"rank_neg": 30, "coarse_neg": 5}, 4, torch.Generator().manual_seed(seed))
        assert len(drawn["rank_neg"]) == 8 and len(set(drawn["rank_neg"].tolist())) == 8
        assert drawn["coarse_neg"].tolist() == [0, 1, 2, 3, 4]  # the pool is smaller than 4 x 2: all of it
        hits[drawn["rank_neg"]] += 1
    expected = 3000 * 8 / 30
    assert float((hits - expected).abs().max()) < 5 * (expected * (1 - 8 / 30)) ** 0.5  # binomial, 5 sigma


def test_unknown_scope_is_refused():
    with pytest.raises(ValueError, match="scope must be one of"):
        StageExtraNegativeSampler(["rank_neg"], scope="day")
