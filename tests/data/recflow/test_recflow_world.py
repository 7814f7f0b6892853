import numpy as np
import pytest

from stcrank.data.recflow.world import SyntheticWorld


def test_same_arguments_same_world():
    a, b = SyntheticWorld.create(50, 500, 3), SyntheticWorld.create(50, 500, 3)
    assert np.array_equal(a.item_latent, b.item_latent) and np.array_equal(a.user_device, b.user_device)
    assert not np.array_equal(a.item_latent, SyntheticWorld.create(50, 500, 4).item_latent)


def test_affinity_has_unit_scale_and_broadcasts():
    world = SyntheticWorld.create(300, 3000, 0)
    rng = np.random.default_rng(0)
    users, items = rng.integers(0, 300, 20000), rng.integers(0, 3000, 20000)
    affinity = world.affinity(users, items)
    assert 0.7 < affinity.std() < 1.5
    grid = world.affinity(users[:40, None], items[: 40 * 7].reshape(40, 7))
    assert grid.shape == (40, 7)
    assert np.allclose(grid[:, 0], world.affinity(users[:40], items[: 40 * 7].reshape(40, 7)[:, 0]), atol=1e-5)


def test_retrieval_draws_distinct_items_favouring_popular_ones():
    world = SyntheticWorld.create(10, 2000, 0)
    drawn = world.sample_retrieval(np.random.default_rng(1), 300, 100)
    assert drawn.shape == (300, 100) and drawn.min() >= 0 and drawn.max() < 2000
    assert all(len(np.unique(row)) == 100 for row in drawn)
    counts = np.bincount(drawn.ravel(), minlength=2000)
    popular = world.item_bias > np.median(world.item_bias)
    assert counts[popular].mean() > counts[~popular].mean()


def test_feedback_is_consistent_and_calibrated():
    world = SyntheticWorld.create(100, 1000, 0)
    rng = np.random.default_rng(2)
    users, items = np.repeat(np.arange(100), 2000), rng.integers(0, 1000, 200_000)
    feedback = world.sample_watch(rng, users, items)
    duration = world.item_duration_ms[items]
    assert np.array_equal(feedback["effective_view"], (10 * feedback["playing_time"] >= 3 * duration).astype(int))
    assert np.array_equal(feedback["long_view"], (feedback["playing_time"] >= duration).astype(int))
    for name in ("like", "follow", "forward", "comment"):
        assert np.all(feedback[name] <= feedback["effective_view"])
    expected = world.effective_view_probability(users, items).mean()
    assert abs(feedback["effective_view"].mean() - expected) < 0.01


def test_personalised_retrieval_keeps_better_items_and_pool_one_is_popularity():
    world = SyntheticWorld.create(50, 4000, 0)
    users = np.arange(50)
    plain = world.sample_retrieval(np.random.default_rng(5), 50, 300)
    same = world.sample_personalised_retrieval(np.random.default_rng(5), users, 300, 1, 0.5)
    np.testing.assert_array_equal(plain, same)
    personalised = world.sample_personalised_retrieval(np.random.default_rng(5), users, 300, 3, 0.5)
    assert personalised.shape == (50, 300)
    assert all(len(set(row)) == 300 for row in personalised)
    gain = world.affinity(users[:, None], personalised).mean() - world.affinity(users[:, None], plain).mean()
    assert gain > 0.5
    with pytest.raises(ValueError, match="pool must be at least 1"):
        world.sample_personalised_retrieval(np.random.default_rng(5), users, 300, 0, 0.5)


def test_retrieval_that_cannot_find_enough_distinct_items_fails_clearly():
    world = SyntheticWorld.create(50, 4000, 0)
    with pytest.raises(ValueError, match="could not draw 2000 distinct items"):
        world.sample_retrieval(np.random.default_rng(0), 3, 2000)
