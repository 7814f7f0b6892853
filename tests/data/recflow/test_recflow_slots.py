import numpy as np
import pytest
import torch

from stcrank import registry
from stcrank.data.recflow.schema import ITEM_FEATURES, STAGE_CODE
from stcrank.data.recflow.slots import SLOT_CODE, SLOT_PRIORITY, StageSlots, check_slots
from stcrank.data.recflow.store import RecFlowStore

SLOTS = {"click": 3, "realshow": 3, "rank_pos": 4, "coarse_neg": 2}


def test_first_rows_of_each_slot_against_brute_force(recflow_store):
    store = RecFlowStore(recflow_store)
    day = store.days[0]
    slots = StageSlots(store, day, registry.resolve("labels", "effective_view"), SLOTS)
    offsets = store.stage_offsets(day)
    data = store.candidates(day, ["stage", "effective_view", *ITEM_FEATURES])
    out = slots.gather(torch.arange(len(offsets)))
    assert out["items"].shape == (len(offsets), 12, 8)
    for r in range(0, len(offsets), 7):
        rows = np.arange(offsets[r, 0], offsets[r, -1])
        expected = []
        for name, size in SLOTS.items():
            stage = STAGE_CODE["realshow" if name == "click" else name]
            members = rows[data["stage"][rows] == stage]
            if name == "click":
                members = members[data["effective_view"][members] == 1]
            elif name == "realshow":
                members = members[data["effective_view"][members] == 0]
            picked = list(members[:size]) + [-1] * (size - len(members[:size]))
            expected += picked
        expected = np.array(expected)
        real = expected >= 0
        assert torch.equal(out["mask"][r], torch.from_numpy(real))
        items = np.stack([data[n][expected[real]] + 1 for n in ITEM_FEATURES], -1)
        assert torch.equal(out["items"][r][out["mask"][r]], torch.from_numpy(items).long())
        assert torch.equal(out["items"][r][~out["mask"][r]], torch.zeros(int((~real).sum()), 8, dtype=torch.long))
        labels = out["label"][r][out["mask"][r]]
        slot = out["slot"][r][out["mask"][r]]
        assert torch.all(labels[slot == SLOT_CODE["click"]] == 1) and torch.all(labels[slot != SLOT_CODE["click"]] == 0)
        priority = out["priority"][r][out["mask"][r]]
        codes_to_priority = {SLOT_CODE[n]: SLOT_PRIORITY[n] for n in SLOTS}
        assert all(codes_to_priority[int(c)] == int(p) for c, p in zip(slot, priority, strict=True))


def test_clicked_items_never_repeat_as_realshow(recflow_store):
    store = RecFlowStore(recflow_store)
    day = store.days[0]
    slots = StageSlots(store, day, registry.resolve("labels", "effective_view"), {"click": 6, "realshow": 6})
    out = slots.gather(torch.arange(len(store.stage_offsets(day))))
    index = slots.index[out["mask"]]
    assert len(index) == len(set(index.tolist()))  # each exposure in one slot only
    assert int(out["mask"].sum()) > 0 and bool((out["slot"] == SLOT_CODE["click"]).any())


def test_check_slots():
    with pytest.raises(ValueError, match="unknown slot"):
        check_slots({"clicks": 1}, "x")
    with pytest.raises(ValueError, match="at least 1"):
        check_slots({"click": 0}, "x")
