import pytest
import torch

from stcrank.simulation.config import FocusConfig, WorldConfig
from stcrank.simulation.evaluation import paired_delta
from stcrank.simulation.explore import sample_focus_starts
from stcrank.simulation.focus import simulate_focus
from stcrank.simulation.policies import (
    ERandomPolicy,
    ETruthPredictor,
    EValuePolicy,
    RandomPolicy,
    TruthPredictor,
    ValuePolicy,
    WeightedSum,
    explore_logging_policy,
    focus_logging_policy,
)
from stcrank.simulation.requests import CandidatePool, ERequest, FRequest
from stcrank.simulation.truth import pair_terms, vtr
from stcrank.simulation.world import World


@pytest.fixture(scope="module")
def world() -> World:
    return World.build(WorldConfig(users=100, items=2500, brands=80), seed=0)


def _request(world: World, users: list[int], pool: torch.Tensor, keys: list[int] | None = None) -> FRequest:
    users_t = torch.tensor(users)
    rows = torch.arange(len(users))
    return FRequest(
        world=world,
        session_key=torch.tensor(keys or list(range(len(users)))),
        user=users_t,
        trigger=pool[:, 0],
        candidates=pool,
        request_index=0,
        depth=0,
        same_category_views=torch.zeros(len(users), world.n_categories, dtype=torch.long),
        ipv_so_far=torch.zeros(len(users), dtype=torch.long),
        pool=CandidatePool(
            torch.tensor(keys or list(range(len(users)))), users_t, pool, pair_terms(world, users_t[:, None], pool)
        ),
        pool_rows=rows,
        pool_positions=torch.arange(pool.shape[1]).expand(len(users), -1),
    )


def test_truth_predictor_without_noise_is_the_truth(world):
    request = _request(world, [1, 2], torch.arange(40).view(2, 20))
    truth = request.truth()
    for label, want in (
        ("all", truth.sdr),
        ("filtered", truth.sdr_filtered),
        ("no_purchase", truth.continue_no_purchase),
    ):
        got = TruthPredictor(vtr_threshold=7.0, sdr_label=label).predict(request)
        assert torch.allclose(got["sdr"], want) and torch.allclose(got["cvr"], truth.cvr)
        assert torch.allclose(got["vtr"], vtr(request.terms, 7.0))


def test_noise_is_persistent_per_user_item_and_seeded(world):
    pool = torch.arange(60).view(3, 20)
    a = TruthPredictor(noise=1.0, seed=1).predict(_request(world, [1, 2, 1], pool))
    # the same (user, item) pairs in another request, another order and batch
    b = TruthPredictor(noise=1.0, seed=1).predict(_request(world, [1], pool[2:].flip(1), keys=[9]))
    assert torch.allclose(a["cvr"][2], b["cvr"][0].flip(0))
    c = TruthPredictor(noise=1.0, seed=2).predict(_request(world, [1, 2, 1], pool))
    assert not torch.allclose(a["cvr"], c["cvr"])
    exact = TruthPredictor().predict(_request(world, [1, 2, 1], pool))
    residual = torch.logit(a["cvr"]) - torch.logit(exact["cvr"])
    assert 0.6 < float(residual.std()) < 1.4


def test_truth_predictor_validates_its_arguments():
    with pytest.raises(ValueError, match="sdr_label"):
        TruthPredictor(sdr_label="swipes")
    with pytest.raises(ValueError, match="vtr_threshold"):
        TruthPredictor(vtr_threshold=0)


def test_weighted_sum_and_missing_predictions():
    p = {"cvr": torch.tensor([0.1, 0.2]), "vtr": torch.tensor([0.5, 0.0])}
    assert torch.allclose(WeightedSum({"cvr": 1.0, "vtr": 0.2})(p), torch.tensor([0.2, 0.2]))
    with pytest.raises(KeyError, match="sdr"):
        WeightedSum({"sdr": 1.0})(p)
    with pytest.raises(ValueError):
        WeightedSum({})


def test_value_policy_greedy_reranked_and_sampled(world):
    request = _request(world, [1, 2], torch.arange(40).view(2, 20))
    predictor = TruthPredictor()
    ensemble = WeightedSum({"cvr": 1.0, "vtr": 0.05})
    value = ensemble(predictor.predict(request))
    greedy = ValuePolicy(predictor, ensemble).rank(request, 5)
    assert torch.equal(greedy, torch.topk(value, 5, dim=1).indices)
    seen = {}

    def reranker(v: torch.Tensor, s: torch.Tensor, k: int) -> torch.Tensor:
        seen["args"] = (v, s, k)
        return torch.argsort(s, dim=1, descending=True)[:, :k]

    reranked = ValuePolicy(predictor, ensemble, reranker).rank(request, 4)
    v, s, k = seen["args"]
    assert torch.allclose(v, value) and torch.allclose(s, predictor.predict(request)["sdr"]) and k == 4
    assert torch.equal(reranked, torch.argsort(s, dim=1, descending=True)[:, :4])
    sampled = ValuePolicy(predictor, ensemble, temperature=0.01, seed=3).rank(request, 5)
    assert torch.equal(sampled, ValuePolicy(predictor, ensemble, temperature=0.01, seed=3).rank(request, 5))
    assert not torch.equal(sampled, greedy)
    with pytest.raises(KeyError, match="continue"):
        ValuePolicy(predictor, ensemble, reranker, continue_task="continue").rank(request, 4)
    with pytest.raises(ValueError, match="temperature"):
        ValuePolicy(predictor, ensemble, temperature=-1)


def test_random_policies_are_distinct_and_fixed_per_session(world):
    request = _request(world, [1, 2], torch.arange(40).view(2, 20))
    a = RandomPolicy(seed=1).rank(request, 10)
    assert torch.equal(a, RandomPolicy(seed=1).rank(request, 10))
    assert all(len(set(row.tolist())) == 10 for row in a)
    assert not torch.equal(a, RandomPolicy(seed=2).rank(request, 10))
    e_request = ERequest(world, torch.tensor([0, 1]), torch.tensor([1, 2]), torch.arange(40).view(2, 20))
    e = ERandomPolicy(seed=1).rank(e_request, 10)
    assert e.shape == (2, 10) and all(len(set(row.tolist())) == 10 for row in e)


def test_explore_predictor_and_look_ahead_table(world):
    request = ERequest(world, torch.tensor([0, 1]), torch.tensor([1, 2]), torch.arange(40).view(2, 20))
    plain = ETruthPredictor().predict(request)
    truth = request.truth()
    assert set(plain) == {"ctr", "cvr", "swipe"} and torch.allclose(plain["swipe"], truth.swipe)
    by_category = torch.linspace(0.1, 0.9, world.n_categories)
    got = ETruthPredictor(f_conversion=by_category).predict(request)["f_conv"]
    assert torch.allclose(got, by_category[world.item_category[request.candidates]])
    table = torch.rand(world.n_users, world.n_categories)
    got = ETruthPredictor(f_conversion=table).predict(request)["f_conv"]
    assert torch.allclose(got[1], table[2, world.item_category[request.candidates[1]]])
    with pytest.raises(ValueError, match="f_conversion"):
        ETruthPredictor(f_conversion=torch.zeros(2, 2, 2))
    policy = EValuePolicy(ETruthPredictor(), lambda p: p["ctr"] * p["swipe"])
    assert torch.equal(policy.rank(request, 3), torch.topk(truth.ctr * truth.swipe, 3, dim=1).indices)
    assert explore_logging_policy().rank(request, 5).shape == (2, 5)
    assert focus_logging_policy().rank(_request(world, [1], torch.arange(20).view(1, 20)), 5).shape == (1, 5)


def _ratio_reranker(value: torch.Tensor, cont: torch.Tensor, k: int) -> torch.Tensor:
    """Top k by value, ordered by v / (1 - s): the optimal order of a fixed set."""
    top = torch.topk(value, k, dim=1).indices
    ratio = value.gather(1, top) / (1 - cont.gather(1, top)).clamp(min=1e-9)
    return top.gather(1, torch.argsort(ratio, dim=1, descending=True))


def test_sdr_with_purchase_exits_pushes_buyable_items_later_and_costs_purchases():
    """The known subtlety: the eq. 5 sdr label penalises buyable items; eq. 6 zero-weighting fixes it."""
    world = World.build(seed=0)
    starts = sample_focus_starts(world, 2000, seed=2)
    config = FocusConfig(candidates=100)
    results = {}
    for label in ("all", "filtered"):
        predictor = TruthPredictor(sdr_label=label)
        policy = ValuePolicy(predictor, WeightedSum({"cvr": 1.0, "sdr": 1.0}), _ratio_reranker)
        results[label] = simulate_focus(world, policy, starts, config=config, seed=2, record=True)

    def buyable_position(label: str) -> float:
        c = results[label].log.columns
        return float((c["truth_cvr"] * c["page_position"]).sum() / c["truth_cvr"].sum())

    def expected_purchases(label: str) -> torch.Tensor:
        # Rao-Blackwellised purchases: the true purchase probability of every view served
        c = results[label].log.columns
        return torch.zeros(len(starts)).index_add_(0, c["session"], c["truth_cvr"])

    assert buyable_position("all") > buyable_position("filtered") + 0.2
    delta = paired_delta(expected_purchases("all"), expected_purchases("filtered"))
    assert delta.delta < 0 and delta.z < -2, delta
