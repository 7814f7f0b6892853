import pytest
import torch

from stcrank.data.eshop.schema import E_LOG_COLUMNS, F_LOG_COLUMNS
from stcrank.simulation.config import WorldConfig
from stcrank.simulation.requests import CandidatePool, ERequest, FRequest
from stcrank.simulation.truth import focus_truth, pair_terms
from stcrank.simulation.world import World


@pytest.fixture(scope="module")
def world() -> World:
    return World.build(WorldConfig(users=100, items=2500, brands=80), seed=0)


def _request(world: World) -> FRequest:
    users = torch.tensor([3, 7])
    pool = torch.tensor([[10, 11, 12, 13, 2400], [20, 21, 22, 23, 24]])
    views = torch.zeros(2, world.n_categories, dtype=torch.long)
    views[0, world.item_category[10]] = 2
    return FRequest(
        world=world,
        session_key=torch.tensor([0, 1]),
        user=users,
        trigger=torch.tensor([5, 6]),
        candidates=pool[:, [4, 0, 2]],
        request_index=1,
        depth=10,
        same_category_views=views,
        ipv_so_far=torch.tensor([4, 0]),
        pool=CandidatePool(torch.tensor([0, 1]), users, pool, pair_terms(world, users[:, None], pool)),
        pool_rows=torch.tensor([0, 1]),
        pool_positions=torch.tensor([[4, 0, 2], [4, 0, 2]]),
    )


def test_columns_are_the_f_log_feature_columns(world):
    request = _request(world)
    cols = request.columns()
    features = {c.name for c in F_LOG_COLUMNS if c.role == "feature"}
    assert set(cols) == features
    for name, values in cols.items():
        assert values.shape == (2, 3), name
    assert torch.equal(cols["item_id"], request.candidates + 1)
    assert torch.equal(cols["user_id"][:, 0], request.user + 1)
    assert torch.equal(cols["trigger_item_id"][:, 2], request.trigger + 1)
    same = world.item_category[request.candidates] == world.item_category[10]
    assert torch.equal(cols["hist_same_category_views"][0], torch.where(same[0], 2, 0))
    assert int(cols["request_index"].unique()) == 1 and cols["hist_ipv"][0].tolist() == [4, 4, 4]


def test_truth_is_the_closed_form_at_the_request_history(world):
    request = _request(world)
    direct = pair_terms(world, request.user[:, None], request.candidates)
    assert torch.allclose(request.terms.mu, direct.mu) and torch.equal(request.terms.category, direct.category)
    want = focus_truth(world, direct, request.candidate_views(), 10)
    got = request.truth()
    for name in ("ipv", "cvr", "cvr_given_ipv", "e0", "e1", "sdr", "sdr_filtered"):
        assert torch.allclose(getattr(got, name), getattr(want, name)), name
    assert len(request) == 2


def test_pooled_values_are_computed_once_per_pool(world):
    request = _request(world)
    calls = []

    def compute(pool):
        calls.append(1)
        return pool.items.float() * 10

    assert torch.equal(request.pooled("x", compute), request.candidates.float() * 10)
    assert torch.equal(request.pooled("x", compute), request.candidates.float() * 10)
    assert len(calls) == 1


def test_explore_request_columns_and_truth(world):
    request = ERequest(world, torch.tensor([0, 1]), torch.tensor([1, 2]), torch.tensor([[1, 2], [3, 4]]))
    cols = request.columns()
    features = {c.name for c in E_LOG_COLUMNS if c.role == "feature"}
    assert set(cols) == features
    assert request.truth().ctr.shape == (2, 2) and len(request) == 2
