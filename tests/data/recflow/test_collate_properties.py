"""Property-based checks of stcrank.data.recflow.collate: batch invariants and clear errors on bad columns."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stcrank.data.recflow.collate import CandidateDay, ExposureDay, compute_labels, item_matrix
from stcrank.data.recflow.schema import FEEDBACK_COLUMNS, ITEM_FEATURES, RANK_CANDIDATE_STAGES
from stcrank.data.recflow.store import RecFlowStore
from stcrank_plugins.labels.recflow import EffectiveViewLabel

PROPS = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
DAY = "2024-01-14"

# Item tables of the batch layout, in ITEM_FEATURES order (upload time shares the request-time tables).
ITEM_TABLES = ("video_id", "author_id", "category_level_two", "category_level_one", "upload_type", "wday", "hour")
ITEM_TABLES = (*ITEM_TABLES, "minute")


@pytest.fixture(scope="module")
def store(recflow_store):
    return RecFlowStore(recflow_store)


@pytest.fixture(scope="module")
def candidates(store):
    return CandidateDay(store, DAY, EffectiveViewLabel(), RANK_CANDIDATE_STAGES, shuffle_candidates=False)


@pytest.fixture(scope="module")
def exposures(store):
    return ExposureDay(store, DAY, EffectiveViewLabel())


@PROPS
@given(data=st.data())
def test_candidate_batches_are_well_formed_for_any_index(candidates, store, data):
    index = torch.tensor(data.draw(st.lists(st.integers(0, len(candidates) - 1), max_size=12)), dtype=torch.long)
    batch = candidates.batch(index)
    mask, label = batch["candidate_mask"], batch["candidate_label"]
    rows = len(index)
    assert mask.shape[0] == rows and batch["candidates"].shape[:2] == mask.shape
    # Real candidates form a prefix of each row, as many as the request has; padding is all zeros.
    assert torch.equal(mask.sum(1), candidates.counts[candidates.rows[index]])
    assert torch.equal(mask, torch.arange(mask.shape[1]).expand_as(mask) < mask.sum(1, keepdim=True))
    assert (batch["candidates"][~mask] == 0).all() and (label[~mask] == 0).all()
    assert (batch["candidate_stage"][~mask] == 0).all()
    # Labels are 0/1, finite; ids of real candidates are >= 1 and fit the manifest's embedding tables.
    assert torch.isfinite(label).all() and ((label == 0) | (label == 1)).all()
    sizes = store.feature_sizes
    real = batch["candidates"][mask]
    assert (real >= 1).all()
    for position, table in enumerate(ITEM_TABLES):
        assert (real[:, position] < sizes[table]).all(), table
    # Without shuffling, a batch is the concatenation of single-request batches (requests are independent).
    for row in range(rows):
        alone = candidates.batch(index[row : row + 1])
        width = int(alone["candidate_mask"].sum())
        assert torch.equal(alone["candidates"][0, :width], batch["candidates"][row, :width])
        assert torch.equal(alone["candidate_label"][0, :width], label[row, :width])


@pytest.fixture(scope="module")
def capped_days(store):
    return {
        cap: CandidateDay(store, DAY, EffectiveViewLabel(), RANK_CANDIDATE_STAGES, max_candidates=cap) for cap in (1, 7)
    }


@PROPS
@given(data=st.data(), seed=st.integers(0, 2**31), cap=st.sampled_from([1, 7]))
def test_shuffling_and_capping_keep_a_subset_of_each_request(candidates, capped_days, data, seed, cap):
    plain, capped = candidates, capped_days[cap]
    index = torch.tensor(data.draw(st.lists(st.integers(0, len(plain) - 1), min_size=1, max_size=6)))
    full = plain.batch(index)
    sample = capped.batch(index, torch.Generator().manual_seed(seed))
    assert sample["candidate_mask"].shape[1] <= cap
    for row in range(len(index)):
        every = {tuple(x) for x in full["candidates"][row][full["candidate_mask"][row]].tolist()}
        kept = sample["candidates"][row][sample["candidate_mask"][row]].tolist()
        assert len(kept) == min(cap, int(full["candidate_mask"][row].sum()))
        assert {tuple(x) for x in kept} <= every


def test_an_empty_index_gives_empty_batches(candidates, exposures):
    batch = candidates.batch(torch.zeros(0, dtype=torch.long))
    assert batch["candidate_mask"].shape == (0, 0) and batch["candidates"].shape == (0, 0, 8)
    point = exposures.batch(torch.zeros(0, dtype=torch.long))
    assert point["item"].shape == (0, 8) and point["label"].shape == (0,)


@PROPS
@given(data=st.data())
def test_exposure_batches_hold_binary_labels_and_shifted_ids(exposures, store, data):
    index = torch.tensor(data.draw(st.lists(st.integers(0, len(exposures) - 1), max_size=16)), dtype=torch.long)
    batch = exposures.batch(index)
    assert torch.isfinite(batch["label"]).all() and ((batch["label"] == 0) | (batch["label"] == 1)).all()
    assert (batch["item"] >= 1).all()
    for position, table in enumerate(ITEM_TABLES):
        assert (batch["item"][:, position] < store.feature_sizes[table]).all(), table
    # The sequence mask and the sequence agree: real behaviours have ids >= 1, padding is 0.
    seq, seq_mask = batch["seq"], batch["seq_mask"]
    assert (seq[seq_mask] >= 1).all() and (seq[~seq_mask] == 0).all()


# --- column checks ---------------------------------------------------------------------------------------------


@PROPS
@given(st.lists(st.integers(0, 2**31 - 2), min_size=1, max_size=20))
def test_item_ids_up_to_the_int32_limit_are_shifted_exactly(ids):
    values = np.array(ids, dtype=np.int64)
    matrix = item_matrix(dict.fromkeys(ITEM_FEATURES, values))
    assert matrix.dtype == torch.int32
    assert np.array_equal(matrix.numpy().astype(np.int64), np.repeat((values + 1)[:, None], 8, axis=1))


@PROPS
@given(
    st.sampled_from(ITEM_FEATURES),
    st.one_of(st.integers(2**31 - 1, 2**62), st.integers(-(2**62), -1)),
    st.integers(0, 5),
)
def test_ids_that_would_wrap_around_or_are_negative_raise_naming_the_column(column, bad, at):
    columns = {name: np.arange(6, dtype=np.int64) for name in ITEM_FEATURES}
    columns[column][at] = bad
    with pytest.raises(ValueError, match=rf"days/x: column '{column}' has ids in \[.*\]; expected 0-based ids"):
        item_matrix(columns, "days/x")


def test_non_integer_id_columns_raise_a_type_error():
    columns = {name: np.arange(3, dtype=np.int64) for name in ITEM_FEATURES}
    columns["author_id"] = np.array([0.0, 1.5, np.nan])
    with pytest.raises(TypeError, match="column 'author_id' has dtype float64; expected integer ids"):
        item_matrix(columns, "days/x")


@PROPS
@given(st.integers(0, 9), st.sampled_from([np.nan, 2.0, -1.0]))
def test_bad_label_values_raise_naming_the_file_and_the_column(at, bad):
    columns = {name: np.zeros(10, dtype=np.float32) for name in FEEDBACK_COLUMNS}
    columns["effective_view"][at] = bad
    with pytest.raises(ValueError, match=r"^store/2024-01-14/candidates: column 'effective_view' has"):
        compute_labels(EffectiveViewLabel(), columns, "store/2024-01-14/candidates")


@PROPS
@given(st.lists(st.integers(0, 1), max_size=20))
def test_all_positive_all_negative_and_empty_label_columns_pass_through(labels):
    columns = {name: np.zeros(len(labels), dtype=np.int8) for name in FEEDBACK_COLUMNS}
    columns["effective_view"] = np.array(labels, dtype=np.int8)
    target, keep = compute_labels(EffectiveViewLabel(), columns, "src")
    assert target.dtype == torch.float32 and keep.all()
    assert target.tolist() == [float(x) for x in labels]
