import math

import pytest
import torch

from stcrank.simulation.config import WorldConfig
from stcrank.simulation.world import World

SMALL = WorldConfig(users=300, items=4000, brands=120)


@pytest.fixture(scope="module")
def world() -> World:
    return World.build(SMALL, seed=3)


def test_build_is_deterministic_under_the_seed(world):
    again = World.build(SMALL, seed=3)
    other = World.build(SMALL, seed=4)
    for name in ("item_vec", "item_category", "item_brand", "user_interest", "related_items", "user_segment"):
        assert torch.equal(getattr(world, name), getattr(again, name)), name
    assert not torch.equal(world.item_vec, other.item_vec)


def test_items_are_grouped_by_category_with_sizes_by_weight(world):
    sizes = world.category_sizes
    assert int(sizes.sum()) == world.n_items == SMALL.items
    assert torch.equal(world.item_category, torch.repeat_interleave(torch.arange(world.n_categories), sizes))
    weights = torch.tensor([c.weight for c in SMALL.categories])
    expected = weights / weights.sum() * SMALL.items
    assert torch.all((sizes - expected).abs() <= len(weights))


def test_each_brand_belongs_to_one_category(world):
    pairs = torch.unique(torch.stack([world.item_brand, world.item_category]), dim=1)
    assert pairs.shape[1] == torch.unique(world.item_brand).numel()
    assert world.n_brands <= SMALL.brands


def test_related_items_come_from_other_categories_mostly_the_same_group(world):
    groups = [c.group for c in SMALL.categories]
    for c in range(world.n_categories):
        related = world.related_items[c]
        cats = world.item_category[related]
        assert not bool((cats == c).any())
        assert torch.unique(related).numel() == related.numel()
        same_group = torch.tensor([groups[int(k)] == groups[c] for k in cats])
        other_items = int((world.item_category != c).sum())
        in_group_items = sum(
            int(world.category_sizes[k]) for k in range(world.n_categories) if k != c and groups[k] == groups[c]
        )
        if in_group_items:  # weighted 10x, so over-represented relative to their share of the catalogue
            assert float(same_group.float().mean()) > in_group_items / other_items


def test_user_traits_are_stratified_so_worlds_share_their_spread(world):
    other = World.build(SMALL, seed=11)
    assert torch.allclose(world.user_exit.sort().values, other.user_exit.sort().values)
    assert abs(float(world.user_exit.mean())) < 1e-5
    assert abs(float(world.user_exit.std()) - SMALL.user_exit_scale) < 0.05


def test_affinity_follows_its_formula(world):
    users, items = torch.tensor([0, 5, 299]), torch.tensor([10, 2000, 3999])
    dot = (world.user_vec[users] * world.item_vec[items]).sum(1) / math.sqrt(SMALL.dim)
    want = SMALL.taste_scale * dot + world.user_interest[users, world.item_category[items]] + world.item_quality[items]
    assert torch.allclose(world.affinity(users, items), want)
    grid = world.affinity(users[:, None], items[None, :])
    assert grid.shape == (3, 3) and torch.allclose(grid.diagonal(), want)


def test_logged_features_are_one_based_and_fit_their_tables(world):
    users, items = torch.arange(world.n_users), torch.arange(world.n_items)
    sizes = world.feature_sizes()
    columns = {**world.user_features(users), **world.item_features(items), **world.item_features(items, "trigger")}
    assert set(columns) == set(sizes)
    for name, values in columns.items():
        assert int(values.min()) >= 1 and int(values.max()) < sizes[name], name
    assert torch.equal(columns["trigger_item_id"], items + 1)


def test_category_preference_is_a_distribution_led_by_interest(world):
    users = torch.arange(50)
    p = world.category_preference(users)
    assert torch.allclose(p.sum(1), torch.ones(50))
    sharp = world.category_preference(users, temperature=0.05)
    top = torch.argmax(world.user_interest[users] + torch.log(world.category_sizes.float()) * 0.05, dim=1)
    assert float((sharp.argmax(1) == top).float().mean()) > 0.9


def test_with_behaviour_shares_the_population(world):
    from dataclasses import replace

    changed = world.with_behaviour(replace(world.behaviour, exit_bias=0.0))
    assert changed.item_vec is world.item_vec and changed.behaviour.exit_bias == 0.0


def test_too_few_items_for_the_categories_is_an_error():
    with pytest.raises(ValueError, match="too few"):
        World.build(WorldConfig(users=5, items=5, brands=12))
