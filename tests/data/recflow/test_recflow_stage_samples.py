import numpy as np
import pytest
import torch

from stcrank import registry
from stcrank.data.recflow.collate import ExposureDay
from stcrank.data.recflow.schema import CLICK_PRIORITY, ITEM_FEATURES, STAGE_CODE, STAGE_PRIORITY
from stcrank.data.recflow.stage_samples import AuxiliaryExposureDay, ExtraNegativeDay, RequestListDay
from stcrank.data.recflow.store import RecFlowStore
from stcrank_plugins.negative_samplers.extra import StageExtraNegativeSampler

LABEL = registry.resolve("labels", "effective_view")


@pytest.fixture(scope="module")
def store(recflow_store):
    return RecFlowStore(recflow_store)


def _item_keys(items):
    return [tuple(row) for row in items.tolist()]


@pytest.mark.parametrize("per_stage", [1, 3, None])
def test_extra_negatives_come_from_the_chosen_stages_of_their_request(store, per_stage):
    day = store.days[0]
    sampler = StageExtraNegativeSampler(["rank_pos", "coarse_neg"], per_stage=per_stage)
    data = ExtraNegativeDay(store, day, LABEL, sampler, seed=0)
    exposures = ExposureDay(store, day, LABEL)
    assert len(data) == ExtraNegativeDay.num_rows(store, day, LABEL, sampler)
    n = len(exposures)
    assert torch.equal(data.label[:n], exposures.label) and torch.all(data.label[n:] == 0)
    assert data.n_extra == len(data) - n > 0
    offsets = store.stage_offsets(day)
    columns = store.candidates(day, list(ITEM_FEATURES))
    items = np.stack([columns[name] + 1 for name in ITEM_FEATURES], -1)
    extra_request = data.request_row[n:].numpy()
    for r in np.unique(extra_request)[::5]:
        drawn = _item_keys(data.item[n:][extra_request == r])
        allowed = []
        for stage in ("rank_pos", "coarse_neg"):
            rows = np.arange(offsets[r, STAGE_CODE[stage]], offsets[r, STAGE_CODE[stage] + 1])
            stage_items = _item_keys(torch.from_numpy(items[rows]))
            mine = [d for d in drawn if d in stage_items]
            assert len(mine) == (len(rows) if per_stage is None else min(per_stage, len(rows)))
            allowed += stage_items
        assert all(d in allowed for d in drawn)
        assert len(drawn) == len(set(drawn)) or per_stage is None  # rows drawn once (items may repeat in a list)


@pytest.mark.parametrize("per_stage", [2, None])
def test_request_of_every_sample_read_without_loading_the_day(store, per_stage):
    # What the sampler reads to shuffle whole requests: the request row of each sample, in the day's order.
    day = store.days[0]
    sampler = StageExtraNegativeSampler(["rank_neg", "coarse_neg"], per_stage=per_stage)
    data = ExtraNegativeDay(store, day, LABEL, sampler, seed=0)
    assert np.array_equal(ExtraNegativeDay.request_rows(store, day, LABEL, sampler), data.request_row.numpy())
    exposures = ExposureDay(store, day, LABEL)
    assert np.array_equal(ExposureDay.request_rows(store, day, LABEL), exposures.request_row.numpy())


def test_extra_negatives_are_deterministic_and_seeded(store):
    day = store.days[0]
    sampler = StageExtraNegativeSampler(["rank_neg"], per_stage=2)
    one, two = ExtraNegativeDay(store, day, LABEL, sampler, 0), ExtraNegativeDay(store, day, LABEL, sampler, 0)
    other = ExtraNegativeDay(store, day, LABEL, sampler, 1)
    assert torch.equal(one.item, two.item) and torch.equal(one.request_row, two.request_row)
    assert not torch.equal(one.item, other.item)
    batch = one.batch(torch.tensor([0, len(one) - 1]))
    assert batch["label"].tolist() == [one.label[0].item(), 0.0]


def test_extra_negatives_need_a_stage_sampler(store):
    class Plain:
        pass

    with pytest.raises(TypeError, match="stages"):
        ExtraNegativeDay.num_rows(store, store.days[0], LABEL, Plain())


def test_request_lists_priorities_and_no_duplicates(store):
    day = store.days[0]
    slots = {"click": 6, "realshow": 6, "rerank_pos": 10, "rerank_neg": 10, "rank_pos": 10, "rank_neg": 10}
    data = RequestListDay(store, day, LABEL, slots)
    assert len(data) == RequestListDay.num_rows(store, day, slots)
    batch = data.batch(torch.arange(len(data)))
    assert batch["candidates"].shape == (len(data), 52, 8)
    mask, stage, label = batch["candidate_mask"], batch["candidate_stage"], batch["candidate_label"]
    expected = [CLICK_PRIORITY] * 6 + [STAGE_PRIORITY["realshow"]] * 6 + [4] * 10 + [3] * 10 + [4] * 10 + [3] * 10
    assert torch.equal(stage, torch.tensor(expected).expand_as(stage) * mask)
    assert torch.all(label[:, :6][mask[:, :6]] == 1) and torch.all(label[:, 6:][mask[:, 6:]] == 0)
    assert torch.all(stage[~mask] == 0) and torch.all(batch["candidates"][~mask] == 0)
    # Exposures fill click or realshow, never both: per request, the two blocks hold the exposures once.
    exposures = ExposureDay(store, day, LABEL)
    per_request = torch.bincount(exposures.request_row, minlength=int(data.rows.max()) + 1)[data.rows]
    assert int(per_request.max()) <= 6  # the generated store shows at most 6 items per request
    assert torch.equal(mask[:, :12].sum(1), per_request)


def test_aux_exposures_carry_their_requests_stage_items(store):
    day = store.days[0]
    slots = dict.fromkeys(["rerank_pos", "rank_neg"], 4)
    data = AuxiliaryExposureDay(store, day, LABEL, slots)
    assert len(data) == AuxiliaryExposureDay.num_rows(store, day, LABEL)
    batch = data.batch(torch.arange(20))
    lists = RequestListDay(store, day, LABEL, slots)
    rows = data.exposures.request_row[:20]
    expected = lists.slots.gather(rows)
    assert torch.equal(batch["aux_items"], expected["items"]) and torch.equal(batch["aux_mask"], expected["mask"])
    assert batch["aux_mask"].any()
    with pytest.raises(ValueError, match="stage samples"):
        AuxiliaryExposureDay(store, day, LABEL, {"click": 2})


def _drawn_candidate_rows(store, day, data, n):
    """Candidate-table row of every extra negative (matched by request and item features)."""
    offsets = store.stage_offsets(day)
    columns = store.candidates(day, list(ITEM_FEATURES))
    items = np.stack([columns[name] + 1 for name in ITEM_FEATURES], -1)
    extra_request = data.request_row[n:].numpy()
    extra_items = data.item[n:].numpy()
    rows = []
    for request, item in zip(extra_request, extra_items, strict=True):
        stage = STAGE_CODE["rank_neg"]
        candidates = np.arange(offsets[request, stage], offsets[request, stage + 1])
        match = candidates[(items[candidates] == item).all(axis=1)]
        assert len(match) >= 1  # a rank_neg row of the request the sample is attached to
        rows.append(int(match[0]))
    return rows


def test_global_extra_negatives_draw_n_requests_rows_from_the_whole_day(store):
    day = store.days[0]
    sampler = StageExtraNegativeSampler(["rank_neg"], per_stage=1, scope="global")
    data = ExtraNegativeDay(store, day, LABEL, sampler, seed=0)
    n = len(ExposureDay(store, day, LABEL))
    offsets = store.stage_offsets(day)
    stage = STAGE_CODE["rank_neg"]
    pool = int((offsets[:, stage + 1] - offsets[:, stage]).sum())
    assert data.n_extra == min(pool, len(offsets)) == len(data) - n
    assert len(data) == ExtraNegativeDay.num_rows(store, day, LABEL, sampler)
    _drawn_candidate_rows(store, day, data, n)
    per_request = np.bincount(data.request_row[n:].numpy(), minlength=len(offsets))
    # Unlike the per-request draw, a request may get several rows and another none.
    assert per_request.max() > 1 and (per_request == 0).any()
    local = ExtraNegativeDay(store, day, LABEL, StageExtraNegativeSampler(["rank_neg"], per_stage=1), seed=0)
    assert np.bincount(local.request_row[n:].numpy()).max() == 1


def test_global_every_row_equals_the_per_request_every_row(store):
    day = store.days[0]
    every = ExtraNegativeDay(store, day, LABEL, StageExtraNegativeSampler(["rank_neg"], per_stage=None), seed=0)
    glob = ExtraNegativeDay(
        store, day, LABEL, StageExtraNegativeSampler(["rank_neg"], per_stage=None, scope="global"), seed=0
    )
    assert torch.equal(every.request_row, glob.request_row) and torch.equal(every.item, glob.item)
