import pytest
import torch

from stcrank import registry
from stcrank.testing import check_plugin
from stcrank_plugins.negative_samplers.uniform import UniformNegativeSampler, draw_excluding, rank_select


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_registered_under_uniform_and_honours_the_contract():
    assert registry.load("negative_samplers", "uniform") is UniformNegativeSampler
    corpus = torch.arange(1, 30)
    check_plugin("negative_samplers", "uniform", {"num_negatives": 50}, pools={"corpus": corpus}, targets=corpus[:8])


def test_draws_come_from_the_corpus_never_the_target_with_priority_zero():
    corpus = torch.tensor([3, 8, 11, 17, 42])
    targets = torch.tensor([3, 8, 42, 99, 11, 17])
    drawn = UniformNegativeSampler(num_negatives=300).sample({"corpus": corpus}, targets, _generator())
    assert drawn.items.shape == drawn.priority.shape == drawn.mask.shape == (6, 300)
    assert bool(drawn.mask.all())
    assert bool(torch.isin(drawn.items, corpus).all())
    assert not bool((drawn.items == targets[:, None]).any())
    assert bool((drawn.priority == 0).all())
    # every other corpus item is reachable
    for row, target in enumerate(targets.tolist()):
        assert set(drawn.items[row].tolist()) == set(corpus.tolist()) - {target}


def test_deterministic_under_a_seed_and_different_across_seeds():
    sampler = UniformNegativeSampler(num_negatives=40)
    pools, targets = {"corpus": torch.arange(1, 1000)}, torch.arange(1, 9)
    first = sampler.sample(pools, targets, _generator(7))
    assert torch.equal(first.items, sampler.sample(pools, targets, _generator(7)).items)
    assert not torch.equal(first.items, sampler.sample(pools, targets, _generator(8)).items)


def test_uniform_over_the_corpus_minus_the_target():
    corpus = torch.arange(1, 11)
    targets = torch.full((200,), 4)
    drawn = UniformNegativeSampler(num_negatives=500).sample({"corpus": corpus}, targets, _generator(1))
    counts = torch.bincount(drawn.items.reshape(-1), minlength=11)[1:].double()
    assert counts[3] == 0
    expected = 200 * 500 / 9
    others = torch.cat([counts[:3], counts[4:]])
    # 100k draws over 9 items: each count within 2% of its expectation (binomial sd is about 0.9%)
    assert bool(((others - expected).abs() / expected < 0.02).all()), others


def test_a_corpus_dominated_by_the_target_is_still_exact():
    # 99 copies of the target and one other item: redraw rounds cannot clear every collision, the exact finish does
    corpus = torch.cat([torch.full((99,), 5), torch.tensor([6])])
    items, mask = draw_excluding(corpus, torch.tensor([5, 6]), 50, _generator())
    assert bool(mask.all())
    assert bool((items[0] == 6).all())
    assert bool((items[1] == 5).all())


def test_a_corpus_of_only_the_target_gives_masked_slots():
    items, mask = draw_excluding(torch.tensor([5, 5]), torch.tensor([5, 2]), 4, _generator())
    assert not bool(mask[0].any()) and bool((items[0] == 0).all())
    assert bool(mask[1].all()) and bool((items[1] == 5).all())


def test_rank_select_matches_a_loop():
    allowed = torch.rand(20, 15, generator=_generator(3)) < 0.4
    allowed[:, 0] = True
    counts = allowed.sum(dim=1)
    rank = (torch.rand(20, 6, generator=_generator(4)) * counts[:, None]).long()
    got = rank_select(allowed, rank)
    for row in range(20):
        positions = allowed[row].nonzero().squeeze(1)
        assert got[row].tolist() == positions[rank[row]].tolist()


def test_bad_arguments_and_pools_are_refused():
    with pytest.raises(ValueError, match="num_negatives"):
        UniformNegativeSampler(num_negatives=0)
    sampler = UniformNegativeSampler(num_negatives=3)
    with pytest.raises(ValueError, match="no 'corpus'"):
        sampler.sample({}, torch.tensor([1]), _generator())
    with pytest.raises(ValueError, match="1-D"):
        sampler.sample({"corpus": torch.ones(2, 2, dtype=torch.long)}, torch.tensor([1]), _generator())
    with pytest.raises(ValueError, match="empty"):
        sampler.sample({"corpus": torch.zeros(0, dtype=torch.long)}, torch.tensor([1]), _generator())
