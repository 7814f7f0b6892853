import math

import pytest
import torch

from stcrank.simulation import truth
from stcrank.simulation.config import BehaviourConfig, WorldConfig
from stcrank.simulation.world import World

SMALL = WorldConfig(users=200, items=3000, brands=100)


@pytest.fixture(scope="module")
def world() -> World:
    return World.build(SMALL, seed=1)


def _states(world: World, n: int = 6):
    g = torch.Generator().manual_seed(0)
    users = torch.randint(0, world.n_users, (n,), generator=g)
    items = torch.randint(0, world.n_items, (n,), generator=g)
    views = torch.tensor([0, 1, 3, 0, 5, 2])[:n]
    return users, items, views


def _monte_carlo(world: World, terms: truth.PairTerms, views: torch.Tensor, depth: int, draws: int):
    """Draw watch time, purchase and exit from the generative definitions, independent of the closed forms."""
    g = torch.Generator().manual_seed(1)
    shape = (draws, terms.mu.numel())
    watch = torch.exp(terms.mu + terms.sigma * torch.randn(shape, generator=g))
    q = torch.sigmoid(terms.buy_logit) * (1 - torch.exp(-(views + 1.0) / terms.involvement))
    mult = torch.zeros(shape)
    for threshold, m in world.behaviour.purchase_time_multipliers:
        mult = torch.where(watch > threshold, m, mult)
    buy = torch.rand(shape, generator=g) < torch.clamp(q * mult, max=1.0)
    e0 = torch.sigmoid(terms.exit_logit + world.behaviour.exit_depth * depth)
    leave = torch.rand(shape, generator=g) < torch.where(buy, terms.e1, e0)
    return watch, buy, leave


def test_focus_truth_matches_monte_carlo_of_the_generative_model(world):
    users, items, views = _states(world)
    terms = truth.pair_terms(world, users, items)
    exact = truth.focus_truth(world, terms, views, depth=4)
    draws = 200_000
    watch, buy, leave = _monte_carlo(world, terms, views, 4, draws)
    tol = 4 * 0.5 / math.sqrt(draws)  # 4 SE of a Bernoulli mean, worst case
    for tau in (2.0, 5.0, 7.3, 25.0):
        assert torch.allclose((watch > tau).float().mean(0), truth.vtr(terms, tau), atol=tol), tau
    assert torch.allclose((watch > 2).float().mean(0), exact.ipv, atol=tol)
    assert torch.allclose(buy.float().mean(0), exact.cvr, atol=tol)
    assert torch.allclose((~leave).float().mean(0), exact.sdr, atol=tol)
    ipv = watch > 2
    cvr_given_ipv = (buy & ipv).float().sum(0) / ipv.float().sum(0)
    assert torch.allclose(cvr_given_ipv, exact.cvr_given_ipv, atol=2 * tol)
    assert not bool((buy & ~ipv).any())  # no purchase without a valid view
    # eq. 6: exits after purchases weigh 0, so the label's mean over the remaining samples is sdr_filtered
    kept = ~(leave & buy)
    filtered = ((~leave) & kept).float().sum(0) / kept.float().sum(0)
    assert torch.allclose(filtered, exact.sdr_filtered, atol=tol)
    no_buy = ~buy
    assert torch.allclose((leave & no_buy).float().sum(0) / no_buy.float().sum(0), exact.e0, atol=2 * tol)
    assert torch.allclose(exact.continue_no_purchase, 1 - exact.e0)
    assert torch.allclose(exact.continue_after_purchase, 1 - exact.e1)


def test_purchase_given_watch_integrates_to_the_conversion_rate(world):
    users, items, views = _states(world)
    terms = truth.pair_terms(world, users, items)
    g = torch.Generator().manual_seed(2)
    watch = torch.exp(terms.mu + terms.sigma * torch.randn((100_000, users.numel()), generator=g))
    given = truth.purchase_prob_given_watch(world, terms, views, watch)
    assert float(given[watch <= 2].abs().max()) == 0.0
    assert torch.allclose(given.mean(0), truth.purchase_prob(world, terms, views), atol=0.002)


def test_involvement_needs_views_for_high_involvement_categories(world):
    shoes = world.category_names.index("womens_shoes")
    socks = world.category_names.index("socks")
    views = torch.arange(6)
    g_shoes = truth.involvement_factor(world.involvement[shoes].expand(6), views)
    g_socks = truth.involvement_factor(world.involvement[socks].expand(6), views)
    assert torch.all(g_shoes.diff() > 0) and float(g_shoes[0]) < 0.3 < 0.6 < float(g_shoes[4])
    assert float(g_socks[0]) > 0.95
    item = world.category_offsets[shoes]
    terms = truth.pair_terms(world, torch.zeros(6, dtype=torch.long), item.expand(6))
    cvr = truth.purchase_prob(world, terms, views)
    assert torch.all(cvr.diff() > 0)


def test_more_exits_after_purchase_make_sdr_punish_buyable_items(world):
    users, items, views = _states(world)
    terms = truth.pair_terms(world, users, items)
    t = truth.focus_truth(world, terms, views, 0)
    # sdr = 1 - e0 - cvr * (e1 - e0): below the no-purchase continuation whenever e1 > e0
    assert torch.allclose(t.sdr, 1 - t.e0 - t.cvr * (t.e1 - t.e0), atol=1e-6)
    assert torch.all(t.sdr[t.e1 > t.e0] < t.continue_no_purchase[t.e1 > t.e0])
    assert torch.all(t.sdr_filtered >= t.sdr)


def test_exit_depth_shifts_the_no_purchase_exit(world):
    from dataclasses import replace

    tired = world.with_behaviour(replace(world.behaviour, exit_depth=0.5))
    users, items, _ = _states(world)
    terms = truth.pair_terms(tired, users, items)
    assert torch.all(truth.exit_prob(tired, terms, 3) > truth.exit_prob(tired, terms, 0))
    assert torch.allclose(truth.exit_prob(world, terms, 3), truth.exit_prob(world, terms, 0))


def test_explore_truth_marginal_swipe_matches_monte_carlo(world):
    users, items, _ = _states(world)
    t = truth.explore_truth(world, users, items)
    g = torch.Generator().manual_seed(3)
    draws = 200_000
    buy = torch.rand((draws, users.numel()), generator=g) < t.detail_cvr
    swipe = torch.rand((draws, users.numel()), generator=g) < torch.where(
        buy, t.swipe_after_purchase, t.swipe_no_purchase
    )
    assert torch.allclose(swipe.float().mean(0), t.swipe, atol=0.005)
    assert torch.allclose(t.enter_focus, t.ctr * t.swipe) and torch.allclose(t.ctcvr, t.ctr * t.detail_cvr)
    assert torch.all((t.ctr > 0) & (t.ctr < 1))
    shoes = world.category_names.index("womens_shoes")
    socks = world.category_names.index("socks")
    u = torch.zeros(2, dtype=torch.long)
    pair = truth.explore_truth(world, u, world.category_offsets[torch.tensor([shoes, socks])])
    assert float(pair.swipe_no_purchase[0]) > float(pair.swipe_no_purchase[1])


def test_return_proxy_rises_with_views_and_purchases(world):
    base = truth.return_prob(world, torch.tensor([0, 5, 5]), torch.tensor([0, 0, 2]))
    assert float(base[0]) < float(base[1]) < float(base[2])
    assert math.isclose(float(base[0]), 1 / (1 + math.exp(-BehaviourConfig().return_bias)), rel_tol=1e-6)
