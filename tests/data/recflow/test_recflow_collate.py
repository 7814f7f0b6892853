from collections.abc import Mapping

import numpy as np
import pytest
import torch

from stcrank.data.recflow.collate import CandidateDay, ExposureDay, RequestFeatures
from stcrank.data.recflow.schema import (
    CANDIDATE_BATCH_KEYS,
    EXPOSURE_BATCH_KEYS,
    ITEM_FEATURES,
    RANK_CANDIDATE_STAGES,
    SEQ_FEATURES,
    STAGE_CODE,
)
from stcrank.data.recflow.store import RecFlowStore
from stcrank.plugins import LabelDefinition, LabelOutput
from stcrank_plugins.labels.recflow import EffectiveViewLabel

DAY = "2024-01-14"


@pytest.fixture(scope="module")
def store(recflow_store):
    return RecFlowStore(recflow_store)


class _LikedOnly(LabelDefinition):
    """A label defined only on liked exposures (exercises the mask)."""

    task = "liked_effective_view"
    required_columns = ("effective_view", "like")

    def compute(self, columns: Mapping[str, torch.Tensor]) -> LabelOutput:
        target = columns["effective_view"].float()
        return LabelOutput(target, columns["like"] == 1, torch.ones_like(target))


class _Weighted(_LikedOnly):
    def compute(self, columns):
        target = columns["effective_view"].float()
        return LabelOutput(target, torch.ones_like(target, dtype=torch.bool), target + 1)


def test_exposure_batch_is_the_store_shifted_by_one(store):
    day = ExposureDay(store, DAY, EffectiveViewLabel())
    raw = store.exposures(DAY)
    requests = store.requests(DAY)
    index = torch.tensor([0, 5, len(day) - 1])
    batch = day.batch(index)
    assert list(batch) == list(EXPOSURE_BATCH_KEYS)
    rows = raw["request_row"][index.numpy()]
    item = np.stack([raw[name][index.numpy()] for name in ITEM_FEATURES], axis=1) + 1
    assert torch.equal(batch["item"], torch.from_numpy(item.astype(np.int64)))
    assert torch.equal(batch["user"][:, 0], torch.from_numpy(requests["user_id"][rows].astype(np.int64) + 1))
    assert torch.equal(batch["context"][:, 1], torch.from_numpy(requests["hour"][rows].astype(np.int64) + 1))
    assert torch.equal(batch["label"], torch.from_numpy(raw["effective_view"][index.numpy()].astype(np.float32)))
    assert torch.equal(batch["request_id"], torch.from_numpy(raw["request_id"][index.numpy()]))
    mask = requests["seq_time_ms"][rows] > 0
    assert torch.equal(batch["seq_mask"], torch.from_numpy(mask))
    for j, name in enumerate(SEQ_FEATURES):
        expected = np.where(mask, requests[f"seq_{name}"][rows] + 1, 0)
        assert torch.equal(batch["seq"][:, :, j], torch.from_numpy(expected.astype(np.int64))), name
    assert batch["seq"].dtype == batch["item"].dtype == torch.int64


def test_padding_is_zero_for_every_feature_including_category_level_one(store):
    features = RequestFeatures.load(store, DAY)
    padded = ~features.seq_mask
    assert padded.any() and features.seq_mask.any()
    assert torch.all(features.seq[padded] == 0)
    assert torch.all(features.seq[features.seq_mask] >= 1)  # a raw 0 id becomes 1, never the padding index


def test_candidate_batch_holds_each_request_stage_items(store):
    day = CandidateDay(store, DAY, EffectiveViewLabel(), RANK_CANDIDATE_STAGES)
    batch = day.batch(torch.arange(8), torch.Generator().manual_seed(0))
    assert list(batch) == list(CANDIDATE_BATCH_KEYS)
    offsets = store.stage_offsets(DAY)
    raw = store.candidates(DAY)
    counts = batch["candidate_mask"].sum(dim=1)
    assert batch["candidates"].shape == (8, int(counts.max()), 8)
    priority_of = {0: 5, 1: 4, 2: 3, 3: 4, 4: 3}
    for b in range(8):
        request = int(day.rows[b])
        begin, end = offsets[request, 0], offsets[request, STAGE_CODE["rank_neg"] + 1]
        expected = sorted(
            (
                int(raw["video_id"][i]) + 1,
                6 if raw["stage"][i] == 0 and raw["effective_view"][i] else priority_of[int(raw["stage"][i])],
                int(raw["effective_view"][i]),
            )
            for i in range(begin, end)
        )
        valid = batch["candidate_mask"][b]
        got = sorted(
            zip(
                batch["candidates"][b, valid, 0].tolist(),
                batch["candidate_stage"][b, valid].tolist(),
                batch["candidate_label"][b, valid].int().tolist(),
                strict=True,
            )
        )
        assert got == expected
        assert not batch["candidates"][b, ~valid].any() and not batch["candidate_stage"][b, ~valid].any()
    assert (batch["candidate_stage"] == 2).sum() == 0  # coarse_neg is not in the ranking stage's space


def test_candidate_order_is_seeded_and_truncation_keeps_a_subset(store, caplog):
    day = CandidateDay(store, DAY, EffectiveViewLabel(), RANK_CANDIDATE_STAGES)
    index = torch.arange(6)
    a = day.batch(index, torch.Generator().manual_seed(1))
    b = day.batch(index, torch.Generator().manual_seed(1))
    c = day.batch(index, torch.Generator().manual_seed(2))
    assert torch.equal(a["candidates"], b["candidates"]) and not torch.equal(a["candidates"], c["candidates"])
    ordered = CandidateDay(store, DAY, EffectiveViewLabel(), RANK_CANDIDATE_STAGES, shuffle_candidates=False)
    stages = ordered.batch(index)["candidate_stage"][0]
    assert stages[0] >= 5  # stage order: the exposures come first
    small = CandidateDay(store, DAY, EffectiveViewLabel(), RANK_CANDIDATE_STAGES, max_candidates=10)
    assert "more than max_candidates=10" in caplog.text
    cut = small.batch(index, torch.Generator().manual_seed(1))
    assert cut["candidates"].shape[1] == 10 and torch.all(cut["candidate_mask"].sum(1) == 10)
    for row in range(6):
        full = set(map(tuple, a["candidates"][row][a["candidate_mask"][row]].tolist()))
        assert set(map(tuple, cut["candidates"][row].tolist())) <= full


def test_label_mask_drops_samples_and_weights_are_refused(store):
    liked = ExposureDay(store, DAY, _LikedOnly())
    likes = store.exposures(DAY, ["like"])["like"]
    assert len(liked) == int(likes.sum()) == ExposureDay.num_rows(store, DAY, _LikedOnly())
    with pytest.raises(ValueError, match="sample weights"):
        ExposureDay(store, DAY, _Weighted())


def test_candidate_rows_do_not_depend_on_the_label_mask(store):
    liked = CandidateDay(store, DAY, _LikedOnly(), RANK_CANDIDATE_STAGES)
    assert len(liked) == CandidateDay.num_rows(store, DAY, RANK_CANDIDATE_STAGES)
    batch = liked.batch(torch.arange(len(liked)))
    kept = int(batch["candidate_mask"].sum())
    assert kept == int(store.exposures(DAY, ["like"])["like"].sum())  # only liked exposures carry like = 1
    assert torch.all(batch["candidate_label"][batch["candidate_mask"]] == 1)
