import pytest
import torch

from stcrank import registry
from stcrank.reports.msc_attribution import (
    FeedPredictor,
    ShiftedContinue,
    attribution_markdown,
    attribution_policies,
    calibration,
    default_arms,
    record_feeds,
)
from stcrank.rerank import sequence_value
from stcrank.simulation.config import FocusConfig, WorldConfig
from stcrank.simulation.evaluation import evaluate_focus
from stcrank.simulation.policies import TruthPredictor
from stcrank.simulation.requests import CandidatePool, FRequest
from stcrank.simulation.truth import pair_terms, vtr
from stcrank.simulation.world import World


@pytest.fixture(scope="module")
def world() -> World:
    return World.build(WorldConfig(users=100, items=2500, brands=80), seed=0)


def _request(world: World, users: list[int], pool: torch.Tensor) -> FRequest:
    users_t = torch.tensor(users)
    keys = torch.arange(len(users))
    return FRequest(
        world=world,
        session_key=keys,
        user=users_t,
        trigger=pool[:, 0],
        candidates=pool,
        request_index=0,
        depth=0,
        same_category_views=torch.zeros(len(users), world.n_categories, dtype=torch.long),
        ipv_so_far=torch.zeros(len(users), dtype=torch.long),
        pool=CandidatePool(keys, users_t, pool, pair_terms(world, users_t[:, None], pool)),
        pool_rows=keys,
        pool_positions=torch.arange(pool.shape[1]).expand(len(users), -1),
    )


def test_feed_predictor_serves_the_truth_next_to_the_model(world):
    request = _request(world, [1, 2], torch.arange(40).view(2, 20))
    truth = request.truth()
    got = FeedPredictor().predict(request)
    assert torch.allclose(got["true_cvr"], truth.cvr) and torch.allclose(got["cvr"], truth.cvr)
    assert torch.allclose(got["true_continue"], truth.sdr)  # 1 - P(exit)
    assert torch.allclose(got["true_sdr_filtered"], truth.sdr_filtered) and torch.allclose(
        got["sdr"], truth.sdr_filtered
    )
    assert torch.allclose(got["true_vtr"], vtr(request.terms, 5.0))
    # A model's keys override the truth's own keys only; the true_* keys stay the truth.
    model = FeedPredictor(TruthPredictor(noise=1.0, sdr_label="all", seed=3)).predict(request)
    assert not torch.allclose(model["cvr"], truth.cvr) and torch.allclose(model["true_cvr"], truth.cvr)


def test_shifted_continue_transforms_on_the_logit_scale():
    seen = []

    def spy(value, continue_prob, k):
        seen.append(continue_prob)
        return torch.topk(value, k, dim=1).indices

    p = torch.tensor([[0.2, 0.5, 0.9]])
    ShiftedContinue(spy, shift=1.0, slope=2.0)(torch.rand(1, 3), p, 2)
    want = torch.sigmoid(2.0 * torch.logit(p.double()) + 1.0).float()
    assert torch.allclose(seen[0], want, atol=1e-6)
    ShiftedContinue(spy)(torch.rand(1, 3), p, 2)
    assert torch.allclose(seen[1], p, atol=1e-6)


def test_calibration_of_hand_made_predictions():
    truth = torch.tensor([0.1, 0.3, 0.5, 0.7, 0.9])
    same = calibration(truth, truth)
    assert same["slope"] == pytest.approx(1.0) and same["logit_slope"] == pytest.approx(1.0)
    assert same["logit_intercept"] == pytest.approx(0.0, abs=1e-9) and same["corr"] == pytest.approx(1.0)
    assert same["mean_exit_ratio"] == pytest.approx(1.0)
    # Predictions flattened to half the logit, and shifted up by 1: the fit recovers slope 2, intercept -2.
    flat = torch.sigmoid(0.5 * torch.logit(truth.double()) + 1.0)
    fit = calibration(flat, truth)
    assert fit["logit_slope"] == pytest.approx(2.0) and fit["logit_intercept"] == pytest.approx(-2.0)
    assert fit["mean_pred"] > fit["mean_true"] and fit["mean_exit_ratio"] > 1.0
    with pytest.raises(ValueError, match="equal shapes"):
        calibration(truth, truth[:3])


def test_attribution_policies_checks_specs(world):
    predictor = FeedPredictor()
    with pytest.raises(ValueError, match="unknown re-ranker 'nope'"):
        attribution_policies(predictor, {"a": {"value": {"true_cvr": 1.0}, "reranker": "nope"}}, {})
    with pytest.raises(ValueError, match="needs 'value'"):
        attribution_policies(predictor, {"a": {}}, {})
    arms = default_arms({"cvr": 1.0, "vtr": 0.3, "sdr": 0.3})
    assert arms["truth:ens|greedy"]["value"] == {"true_cvr": 1.0, "true_vtr": 0.3, "true_sdr_filtered": 0.3}
    for arm in arms.values():
        baselines = arm.get("baseline") or []
        assert all(b in arms for b in ([baselines] if isinstance(baselines, str) else baselines))
    assert arms["truth:ens,filtered|exact"]["baseline"] == ["truth:ens|greedy", "truth:cvr|greedy"]


def test_exact_fed_the_truth_beats_greedy_on_the_list_value(world):
    config = FocusConfig(candidates=30)
    recorded = record_feeds(world, FeedPredictor(), ["true_cvr", "true_continue"], sessions=60, seed=1, config=config)
    value, cont = recorded["true_cvr"], recorded["true_continue"]
    exact = registry.build("rerankers", "exact")(value, cont, config.page_size)
    greedy = torch.topk(value, config.page_size, dim=1).indices
    v_exact, v_greedy = sequence_value(value, cont, exact), sequence_value(value, cont, greedy)
    assert (v_exact >= v_greedy - 1e-9).all() and (v_exact > v_greedy + 1e-9).any()


def test_arms_serve_on_common_sessions_and_render(world):
    arms = {
        "g": {"value": {"true_cvr": 1.0}},
        "x": {"value": {"true_cvr": 1.0}, "continue": "true_continue", "reranker": "exact", "shift": 5.0},
    }
    policies = attribution_policies(FeedPredictor(), arms, {"exact": registry.build("rerankers", "exact")})
    ev = evaluate_focus(world, policies, sessions=200, seed=2, config=FocusConfig(candidates=30))
    d = ev.compare("x", "g", "expected_purchases")
    assert d.delta != 0.0  # a continuation pushed towards 1 orders by value / exit: another list
    result = {
        "comparisons": {
            "x": {
                "baseline": "g",
                **{
                    m: {"relative": 0.01, "relative_se": 0.02}
                    for m in ("expected_purchases", "purchases", "ipv", "depth")
                },
            }
        },
        "calibration": {"sdr vs true_continue": calibration(torch.rand(10), torch.rand(10))},
    }
    text = attribution_markdown(result)
    assert "| `x` | `g` | +1.00% ± 2.00 |" in text and "sdr vs true_continue" in text


def test_continuation_noise_is_shared_with_the_sdr_unless_independent(world):
    request = _request(world, [1, 2], torch.arange(40).view(2, 20))
    truth = request.truth()

    def shift(p, q):
        return torch.logit(p.double()) - torch.logit(q.double().clamp(1e-6, 1 - 1e-6))

    shared = FeedPredictor(noise=1.0, seed=4).predict(request)
    eps_sdr = shift(shared["true_sdr_filtered"], truth.sdr_filtered)
    assert torch.allclose(shift(shared["true_continue"], truth.sdr), eps_sdr, atol=1e-3)
    independent = FeedPredictor(noise=1.0, seed=4, independent_continue=True).predict(request)
    assert torch.allclose(independent["true_sdr_filtered"], shared["true_sdr_filtered"])
    assert (shift(independent["true_continue"], truth.sdr) - eps_sdr).abs().max() > 0.5
