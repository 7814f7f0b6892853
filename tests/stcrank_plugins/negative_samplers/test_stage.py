import pytest
import torch

from stcrank import registry
from stcrank.testing import check_plugin
from stcrank_plugins.negative_samplers.stage import StageHardNegativeSampler, draw_from_lists


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


CORPUS = torch.arange(1, 501)
TARGETS = torch.tensor([10, 20, 30, 40])
PRERANK = torch.tensor(
    [
        [601, 602, 10, 603],  # holds the target
        [604, 0, 0, 0],
        [0, 0, 0, 0],  # empty for this request
        [30, 40, 0, 0],  # only the target once it is removed... plus another request's target
    ]
)
RERANK = torch.tensor([[701, 702], [703, 20], [704, 0], [40, 0]])


def _pools() -> dict[str, torch.Tensor]:
    return {"corpus": CORPUS, "prerank_neg": PRERANK, "rerank_pos": RERANK}


def test_registered_under_stage_hard_and_honours_the_contract():
    assert registry.load("negative_samplers", "stage_hard") is StageHardNegativeSampler
    check_plugin(
        "negative_samplers",
        "stage_hard",
        {"stages": {"prerank_neg": 2, "rerank_pos": 1}, "num_negatives": 20},
        pools=_pools(),
        targets=TARGETS,
    )


def test_stage_draws_come_only_from_their_request_and_stage_never_the_target():
    sampler = StageHardNegativeSampler({"prerank_neg": 3, "rerank_pos": 2}, num_negatives=10)
    drawn = sampler.sample(_pools(), TARGETS, _generator())
    assert drawn.items.shape == (4, 10)
    random, prerank, rerank = drawn.items[:, :5], drawn.items[:, 5:8], drawn.items[:, 8:]
    assert bool(torch.isin(random, CORPUS).all()) and bool(drawn.mask[:, :5].all())
    assert (
        drawn.priority[:, :5].eq(0).all() and drawn.priority[:, 5:8].eq(1).all() and drawn.priority[:, 8:].eq(4).all()
    )
    for row in range(4):
        target = int(TARGETS[row])
        eligible_prerank = {int(v) for v in PRERANK[row] if v != 0 and v != target}
        eligible_rerank = {int(v) for v in RERANK[row] if v != 0 and v != target}
        for items, mask, eligible in (
            (prerank[row], drawn.mask[row, 5:8], eligible_prerank),
            (rerank[row], drawn.mask[row, 8:], eligible_rerank),
        ):
            if eligible:
                assert bool(mask.all()) and set(items.tolist()) <= eligible
            else:  # empty stage: masked slots, never a zero-id negative that counts
                assert not bool(mask.any()) and bool((items == 0).all())
    assert not bool(((drawn.items == TARGETS[:, None]) & drawn.mask).any())


def test_row_three_only_draws_the_other_item():
    drawn = StageHardNegativeSampler({"prerank_neg": 5}, num_negatives=5).sample(_pools(), TARGETS, _generator())
    assert drawn.items[3].tolist() == [30] * 5  # request 3's list is [30, 40]; 40 is its target
    assert drawn.mask[2].tolist() == [False] * 5


def test_every_eligible_item_is_reachable_with_replacement():
    lists = torch.tensor([[5, 6, 7, 8, 0, 0]]).expand(500, 6)
    items, mask = draw_from_lists(lists, torch.full((500,), 6), 4, _generator(2))
    assert bool(mask.all())
    counts = torch.bincount(items.reshape(-1), minlength=9)
    assert counts[6] == 0 and counts[0] == 0
    assert bool((counts[[5, 7, 8]] > 550).all())  # 2000 draws over 3 items


def test_without_replacement_draws_distinct_items_and_masks_the_shortfall():
    lists = torch.tensor([[5, 6, 7, 8], [9, 10, 0, 0]])
    items, mask = draw_from_lists(lists, torch.tensor([6, 1]), 3, _generator(), replacement=False)
    assert sorted(items[0].tolist()) == [5, 7, 8] and bool(mask[0].all())
    assert mask[1].tolist() == [True, True, False]
    assert sorted(items[1, :2].tolist()) == [9, 10] and items[1, 2] == 0


def test_exposure_neg_and_realshow_carry_the_exposure_priority():
    pools = {"corpus": CORPUS, "exposure_neg": RERANK, "realshow": PRERANK}
    drawn = StageHardNegativeSampler({"exposure_neg": 1, "realshow": 1}, num_negatives=3).sample(
        pools, TARGETS, _generator()
    )
    assert drawn.priority[:, 1:].eq(5).all()


def test_deterministic_under_a_seed():
    sampler = StageHardNegativeSampler({"prerank_neg": 2}, num_negatives=30)
    first = sampler.sample(_pools(), TARGETS, _generator(11))
    second = sampler.sample(_pools(), TARGETS, _generator(11))
    assert torch.equal(first.items, second.items) and torch.equal(first.mask, second.mask)
    assert not torch.equal(first.items, sampler.sample(_pools(), TARGETS, _generator(12)).items)


def test_bad_configuration_and_pools_are_refused():
    with pytest.raises(ValueError, match="unknown stages"):
        StageHardNegativeSampler({"rank_top": 1})
    with pytest.raises(ValueError, match="exceed num_negatives"):
        StageHardNegativeSampler({"prerank_neg": 150, "coarse_neg": 60}, num_negatives=200)
    with pytest.raises(ValueError, match="positive integer"):
        StageHardNegativeSampler({"prerank_neg": 0})
    with pytest.raises(ValueError, match="stages is empty"):
        StageHardNegativeSampler({})
    sampler = StageHardNegativeSampler({"coarse_neg": 1}, num_negatives=4)
    with pytest.raises(ValueError, match="no 'coarse_neg'"):
        sampler.sample(_pools(), TARGETS, _generator())
    with pytest.raises(ValueError, match=r"must be \[B=4, S\]"):
        sampler.sample({**_pools(), "coarse_neg": torch.ones(3, 2, dtype=torch.long)}, TARGETS, _generator())
    assert sampler.pool_names == ("corpus", "coarse_neg")
