import pytest
import torch

from stcrank.simulation.config import ExploreConfig, FocusConfig, WorldConfig
from stcrank.simulation.explore import (
    estimate_f_conversion,
    f_conversion_table,
    retrieve_homepage,
    sample_focus_starts,
    sample_visits,
    simulate_explore,
)
from stcrank.simulation.focus import simulate_focus
from stcrank.simulation.policies import ERandomPolicy, RandomPolicy, explore_logging_policy, focus_logging_policy
from stcrank.simulation.world import World

CONFIG = ExploreConfig(candidates=60, page_size=12, focus=FocusConfig(candidates=60, page_size=5, max_depth=30))


@pytest.fixture(scope="module")
def world() -> World:
    return World.build(WorldConfig(users=300, items=4000, brands=120), seed=0)


@pytest.fixture(scope="module")
def visits(world):
    return sample_visits(world, 800, seed=2)


@pytest.fixture(scope="module")
def result(world, visits):
    users, keys = visits
    return simulate_explore(
        world, explore_logging_policy(), focus_logging_policy(), users, keys=keys, seed=2, config=CONFIG, record=True
    )


def test_visits_are_seeded_and_keyed(world, visits):
    users, keys = visits
    assert torch.equal(keys, torch.arange(800))
    again, _ = sample_visits(world, 800, seed=2)
    assert torch.equal(users, again) and int(users.max()) < world.n_users
    with pytest.raises(ValueError, match="visit keys"):
        sample_visits(world, 10, first_key=-1)


def test_homepage_candidates_are_distinct_and_follow_interests(world, visits):
    users, keys = visits
    items = retrieve_homepage(world, users, keys, CONFIG, seed=2)
    assert items.shape == (800, 60)
    assert all(torch.unique(row).numel() == 60 for row in items)
    top = world.user_interest[users].argmax(1)
    share_top = (world.item_category[items] == top[:, None]).float().mean()
    assert float(share_top) > 2.0 / world.n_categories


def test_exposures_clicks_swipes_and_f_sessions_are_consistent(world, visits, result):
    _, keys = visits
    c = result.log.columns
    v = c["visit"]
    assert torch.equal(torch.bincount(v, minlength=800), result.e_exposures)
    first = torch.ones_like(v, dtype=torch.bool)
    first[1:] = v[1:] != v[:-1]
    assert bool((c["position"][first] == 1).all()) and bool((c["position"].diff()[~first[1:]] == 1).all())
    assert not bool((c["purchase"] & ~c["click"]).any()) and not bool((c["swipe"] & ~c["click"]).any())
    assert torch.equal(torch.zeros(800, dtype=torch.long).index_add_(0, v, c["click"].long()), result.e_clicks)
    entered = c["focus_session"] >= 0
    assert torch.equal(entered, c["swipe"]) and int(entered.sum()) == len(result.focus)
    session = c["focus_session"][entered]
    assert torch.equal(result.focus.starts.trigger[session], c["item"][entered])
    assert torch.equal(result.focus_visit[session], v[entered])
    assert torch.equal(result.focus.starts.key, (keys[result.focus_visit] + 1) * 256 + result.focus_position - 1)
    assert torch.equal(result.f_purchases.sum(), result.focus.purchases.sum())
    assert torch.equal(result.f_entries, torch.bincount(result.focus_visit, minlength=800))
    totals = result.category_purchases.sum(0)
    assert int(totals.sum()) == int(result.e_purchases.sum() + result.f_purchases.sum())


def test_realised_homepage_labels_match_the_truth(result):
    c = result.log.columns
    n = len(result.log)
    p = c["truth_ctr"]
    se = float(torch.sqrt((p * (1 - p)).sum())) / n
    assert abs(float(c["click"].float().mean() - p.mean())) < 4 * se
    clicked = c["click"]
    q = c["truth_swipe"][clicked]
    se = float(torch.sqrt((q * (1 - q)).sum())) / q.numel()
    assert abs(float(c["swipe"][clicked].float().mean() - q.mean())) < 4 * se


def test_focus_starts_replay_the_f_part_of_homepage_visits(world, result):
    starts = sample_focus_starts(world, 100, seed=2, e_policy=explore_logging_policy(), config=CONFIG)
    assert torch.equal(starts.key, result.focus.starts.key[:100])
    assert torch.equal(starts.trigger, result.focus.starts.trigger[:100])
    replay = simulate_focus(world, focus_logging_policy(), starts, config=CONFIG.focus, seed=2)
    assert torch.equal(replay.purchases, result.focus.purchases[:100])
    assert torch.equal(replay.depth, result.focus.depth[:100])


def test_chunking_and_policy_changes_keep_common_random_numbers(world, visits, result):
    users, keys = visits
    chunked = simulate_explore(
        world, explore_logging_policy(), focus_logging_policy(), users, keys=keys, seed=2, config=CONFIG, chunk_size=300
    )
    for name in ("e_exposures", "e_clicks", "e_purchases", "f_entries", "f_purchases", "f_depth"):
        assert torch.equal(getattr(chunked, name), getattr(result, name)), name
    # the homepage exit draws do not depend on the homepage policy
    other = simulate_explore(world, ERandomPolicy(), RandomPolicy(), users, keys=keys, seed=2, config=CONFIG)
    assert torch.equal(other.e_exposures, result.e_exposures)


def test_f_conversion_estimates(world):
    users = torch.tensor([0, 1, 2])
    triggers = world.category_offsets[torch.tensor([0, 7, 8])]
    p = estimate_f_conversion(world, focus_logging_policy(), users, triggers, reps=40, config=CONFIG.focus)
    assert p.shape == (3,) and bool(((p >= 0) & (p <= 1)).all())
    assert torch.equal(
        p, estimate_f_conversion(world, focus_logging_policy(), users, triggers, reps=40, config=CONFIG.focus)
    )
    table = f_conversion_table(
        world, focus_logging_policy(), users=torch.tensor([4, 9]), sessions_per_cell=4, config=CONFIG.focus
    )
    assert table.shape == (world.n_users, world.n_categories)
    assert float(table[[4, 9]].sum()) > 0 and float(table[0].abs().sum()) == 0
    with pytest.raises(ValueError):
        estimate_f_conversion(world, focus_logging_policy(), users, triggers[:2])
