from pathlib import Path

import numpy as np
import pytest

from stcrank.data.recflow.funnel_truth import RANDOM, stage_truth, stage_truth_markdown
from stcrank.data.recflow.schema import STAGES
from stcrank.data.recflow.store import RecFlowStore
from stcrank.data.recflow.world import SyntheticWorld

# tests/conftest.py generates the store with users=120, seed=0 and the default funnel (retrieved=1000).
FIXTURE_WORLD = (120, 4000, 0)


@pytest.fixture(scope="module")
def truth(recflow_store: Path) -> tuple[RecFlowStore, SyntheticWorld, dict]:
    store = RecFlowStore(recflow_store)
    world = SyntheticWorld.create(*FIXTURE_WORLD)
    rows = stage_truth(store, world, random_per_request=20, seed=3)
    return store, world, {row.stage: row for row in rows}


def test_stage_means_match_a_direct_computation(truth):
    store, world, by_stage = truth
    for stage in ("realshow", "coarse_neg"):
        users, items = [], []
        for day in store.train_days:
            lists = store.stage_lists(day, [stage])
            request_users = store.requests(day, ["user_id"])["user_id"].astype(np.int64)
            users.append(np.repeat(request_users, lists.counts()))
            items.append(lists.columns["video_id"].astype(np.int64))
        users, items = np.concatenate(users), np.concatenate(items)
        assert by_stage[stage].rows == len(items)
        assert by_stage[stage].affinity == pytest.approx(float(world.affinity(users, items).mean()), rel=1e-5)
        expected_view = float(world.effective_view_probability(users, items).mean())
        assert by_stage[stage].effective_view == pytest.approx(expected_view, rel=1e-5)


def test_later_stages_hold_better_items(truth):
    _, _, by_stage = truth
    assert by_stage["realshow"].affinity > by_stage["rank_neg"].affinity > by_stage["prerank_neg"].affinity
    assert by_stage["realshow"].effective_view > by_stage["prerank_neg"].effective_view
    assert by_stage[RANDOM].rows == sum(
        20 * len(RecFlowStore.requests(truth[0], day, ["user_id"])["user_id"]) for day in truth[0].train_days
    )
    assert list(by_stage) == [s for s in (*STAGES, RANDOM) if s in by_stage]


def test_markdown_marks_stages_below_random(truth):
    _, _, by_stage = truth
    text = stage_truth_markdown(list(by_stage.values()))
    assert "random (exposed corpus)" in text
    assert text.count("\n") == len(by_stage) + 1
    random = by_stage[RANDOM]
    below = [row.stage for row in by_stage.values() if row.stage != RANDOM and row.affinity <= random.affinity]
    assert text.count("**no**") == len(below)


def test_a_world_that_did_not_generate_the_store_is_rejected(truth):
    store = truth[0]
    with pytest.raises(ValueError, match=r"user_id .* outside the world"):
        stage_truth(store, SyntheticWorld.create(10, 4000, 0))


@pytest.mark.parametrize("pool", [1, 3])
def test_personalised_retrieval_puts_every_stage_above_random_items(tmp_path, pool):
    from stcrank.data.recflow.importer import import_recflow
    from stcrank.data.recflow.synth import default_item_count, synth_recflow

    funnel = {"retrieved": 200, "prerank_keep": 120, "coarse_keep": 60, "rank_keep": 30, "stage_samples": 10}
    synth_recflow(out=str(tmp_path / "release"), users=40, days=2, seed=1, retrieval_pool=pool, **funnel)
    import_recflow(src=str(tmp_path / "release"), dst=str(tmp_path / "store"))
    world = SyntheticWorld.create(40, default_item_count(40, 200, pool), 1)
    by_stage = {row.stage: row for row in stage_truth(RecFlowStore(tmp_path / "store"), world)}
    below = {s for s, row in by_stage.items() if s != RANDOM and row.affinity <= by_stage[RANDOM].affinity}
    # Popularity retrieval: the items dropped first are worse than random exposed items; personalised: none is.
    assert ("prerank_neg" in below) == (pool == 1)
    if pool > 1:
        assert not below
