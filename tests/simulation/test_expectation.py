import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from stcrank.simulation.config import FocusConfig, WorldConfig
from stcrank.simulation.expectation import expected_list_outcomes
from stcrank.simulation.explore import sample_focus_starts
from stcrank.simulation.focus import simulate_focus
from stcrank.simulation.policies import TruthPredictor, ValuePolicy, WeightedSum
from stcrank.simulation.world import World


def test_two_items_of_one_category_by_hand():
    # Item 0: P(IPV) 0.5, P(buy) 0.2, exits 0.3 / 0.6. Item 1 (same category): P(buy) 0.1 without an earlier
    # valid view in the list, 0.25 after one; price 10.
    ipv = torch.tensor([[0.5, 0.4]])
    purchase = torch.tensor([[[0.2, 0.0], [0.1, 0.25]]])
    e0, e1 = torch.tensor([[0.3, 0.5]]), torch.tensor([[0.6, 0.9]])
    same = torch.ones(1, 2, 2, dtype=torch.bool)
    price = torch.tensor([[10.0, 20.0]])
    out = expected_list_outcomes(ipv, purchase, e0, e1, same, price)
    stay_no_view = 0.5 * 0.7  # no valid view, no exit
    stay_view = (0.5 - 0.2) * 0.7 + 0.2 * 0.4  # valid view: no purchase and stay, or purchase and stay
    seen_1 = stay_no_view + stay_view
    purchases = 0.2 + stay_no_view * 0.1 + stay_view * 0.25
    assert float(out.depth[0]) == pytest.approx(1 + seen_1)
    assert float(out.ipv[0]) == pytest.approx(0.5 + seen_1 * 0.4)
    assert float(out.purchases[0]) == pytest.approx(purchases)
    assert float(out.gmv[0]) == pytest.approx(0.2 * 10 + (stay_no_view * 0.1 + stay_view * 0.25) * 20)
    survive = stay_no_view * ((0.4 - 0.1) * 0.5 + 0.1 * 0.1 + 0.6 * 0.5) + stay_view * (
        (0.4 - 0.25) * 0.5 + 0.25 * 0.1 + 0.6 * 0.5
    )
    assert float(out.survive[0]) == pytest.approx(survive)


def _brute_force(ipv, purchase, e0, e1, same, price):
    """Sum over every (outcome, exit) path of the list: outcome 0 no view, 1 view, 2 purchase."""
    k = ipv.shape[0]
    totals = {"purchases": 0.0, "ipv": 0.0, "depth": 0.0, "gmv": 0.0}
    for length in range(1, k + 1):
        for outcomes in itertools.product(range(3), repeat=length):
            p = 1.0
            for j, o in enumerate(outcomes):
                count = sum(1 for i in range(j) if same[i, j] and outcomes[i] > 0)
                cvr = float(purchase[j, count])
                p *= [1 - float(ipv[j]), float(ipv[j]) - cvr, cvr][o]
                last = j == length - 1
                exit_p = float(e1[j]) if o == 2 else float(e0[j])
                p *= exit_p if last and length < k else (1 - exit_p if not last else 1.0)
            totals["depth"] += p * length
            totals["ipv"] += p * sum(o > 0 for o in outcomes)
            totals["purchases"] += p * sum(o == 2 for o in outcomes)
            totals["gmv"] += p * sum(float(price[j]) for j, o in enumerate(outcomes) if o == 2)
    return totals


@settings(max_examples=25, deadline=None)
@given(
    k=st.integers(1, 4),
    categories=st.lists(st.integers(0, 1), min_size=4, max_size=4),
    seed=st.integers(0, 10_000),
)
def test_closed_form_equals_the_sum_over_every_path(k, categories, seed):
    g = torch.Generator().manual_seed(seed)
    ipv = 0.2 + 0.7 * torch.rand(k, generator=g, dtype=torch.float64)
    purchase = torch.sort(torch.rand(k, k, generator=g, dtype=torch.float64), dim=1).values * ipv[:, None]
    e0, e1 = torch.rand(k, generator=g, dtype=torch.float64), torch.rand(k, generator=g, dtype=torch.float64)
    cat = torch.tensor(categories[:k])
    same = cat[:, None] == cat[None, :]
    price = 1 + torch.rand(k, generator=g, dtype=torch.float64)
    out = expected_list_outcomes(ipv[None], purchase[None], e0[None], e1[None], same[None], price[None])
    expected = _brute_force(ipv, purchase, e0, e1, same, price)
    for name, value in expected.items():
        assert float(getattr(out, name)[0]) == pytest.approx(value, rel=1e-9, abs=1e-12), name


def test_shapes_are_checked():
    with pytest.raises(ValueError, match="same_category"):
        flat = torch.ones(2, 3)
        expected_list_outcomes(flat, torch.ones(2, 3, 2), flat, flat, torch.ones(2, 3, 3), flat)


def test_one_list_sessions_sampled_mean_matches_the_expectation():
    # Sessions of a single list (max depth = page size): the session's expected outcome is exactly the closed form
    # of its one list, so the mean of the sampled outcomes over many sessions must match it within its SE.
    world = World.build(WorldConfig(users=200, items=3000, brands=100), seed=1)
    config = FocusConfig(candidates=40, page_size=6, max_depth=6)
    starts = sample_focus_starts(world, 20000, seed=2)
    policy = ValuePolicy(TruthPredictor(noise=0.5), WeightedSum({"cvr": 1.0, "vtr": 0.05}))
    result = simulate_focus(world, policy, starts, config=config, seed=2)
    for sampled, expected in (
        (result.purchases, result.expected_purchases),
        (result.ipv, result.expected_ipv),
        (result.depth, result.expected_depth),
        (result.gmv, result.expected_gmv),
    ):
        gap = sampled.double() - expected
        assert abs(float(gap.mean())) < 4 * float(gap.std()) / len(gap) ** 0.5
    # the variance reduction the report relies on
    assert float(result.expected_purchases.std()) < 0.5 * float(result.purchases.double().std())
