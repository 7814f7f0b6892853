import numpy as np
import torch

from stcrank import registry
from stcrank.data.recflow.collate import ExposureDay
from stcrank.data.recflow.competing import CompetingItems, WithCompeting
from stcrank.data.recflow.schema import SEQ_FEATURES, STAGE_CODE
from stcrank.data.recflow.store import RecFlowStore


def test_competing_items_are_the_rank_pos_items_of_each_behaviours_request(recflow_store):
    store = RecFlowStore(recflow_store)
    day = store.days[-1]
    competing = CompetingItems(store, day, "rank_pos", size=3)
    request_id, values, valid = store.sequences(day, ("request_id",))
    ubm = store.read(day, "ubm")
    rows = torch.arange(0, len(request_id), 11)
    out = competing.gather(rows)
    assert out["competing"].shape == (len(rows), 50, 3, 5)
    assert out["competing_mask"].any()
    for b, r in enumerate(rows.tolist()):
        for position in range(50):
            got = out["competing"][b, position][out["competing_mask"][b, position]]
            if not valid[r, position]:
                assert len(got) == 0
                continue
            past = values["request_id"][r, position]
            keep = (ubm["request_id"] == past) & (ubm["stage"] == STAGE_CODE["rank_pos"])
            expected = np.stack([ubm[n][keep][:3] + 1 for n in SEQ_FEATURES], -1).reshape(-1, 5)
            assert torch.equal(got, torch.from_numpy(expected).long())
        assert torch.all(out["competing"][b][~out["competing_mask"][b]] == 0)


def test_wrapped_batches_find_their_request_rows(recflow_store):
    store = RecFlowStore(recflow_store)
    day = store.days[0]
    exposures = ExposureDay(store, day, registry.resolve("labels", "effective_view"))
    competing = CompetingItems(store, day)
    batch = WithCompeting(exposures, competing).batch(torch.arange(30))
    # Held once per request of the batch, like the other request-level tensors.
    slot = batch["request_slot"]
    assert len(batch["competing"]) == len(batch["seq"]) < 30
    expected = competing.gather(exposures.request_row[:30])
    assert torch.equal(batch["competing"][slot], expected["competing"])
    assert torch.equal(batch["competing_mask"][slot], expected["competing_mask"])
    assert torch.equal(competing.rows_of(batch["request_id"]), exposures.request_row[:30])
