"""What each RecFlow pickle may hold: exactly int request ids -> integer arrays of the expected shape, and id_cnt."""

from __future__ import annotations

import pickle
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stcrank.data.recflow.errors import RecFlowFormatError
from stcrank.data.recflow.pickle_contents import read_id_cnt, sequence_batches, ubm_batches

SEQ = np.arange(500, dtype=np.int64).reshape(50, 10)


def _write(tmp_path, value, protocol=4, name="x.pkl"):
    path = tmp_path / name
    path.write_bytes(pickle.dumps(value, protocol=protocol))
    return path


def _sequences(path, batch_items=3):
    batches = list(sequence_batches(path, batch_items))
    keys = np.concatenate([k for k, _ in batches]) if batches else np.zeros(0, np.int64)
    values = np.concatenate([v for _, v in batches]) if batches else np.zeros((0, 50, 10), np.int64)
    return keys, values


@pytest.mark.parametrize(
    ("key", "found"),
    [
        (122.5, "a key is 122.5 (float)"),
        (True, "a key is True (bool)"),
        ("7", "a key is '7' (str)"),
        (-5, "key -5 is not a request id"),
        (2**63, "key 9223372036854775808 is not a request id"),
        (np.float64(3.0), "a key is 3.0 (float)"),
        (np.bool_(True), "a key is True (bool)"),
    ],
)
def test_keys_that_are_not_request_ids_are_refused_not_coerced(tmp_path, key, found):
    path = _write(tmp_path, {2: SEQ, key: SEQ})
    with pytest.raises(RecFlowFormatError, match=r"x\.pkl: " + re.escape(found)):
        _sequences(path)


def test_numpy_integer_keys_are_request_ids(tmp_path):
    keys, values = _sequences(_write(tmp_path, {np.int64(5): SEQ, np.uint32(6): SEQ + 1, 2**62: SEQ}))
    assert keys.tolist() == [5, 6, 2**62] and values.dtype == np.int64 and np.array_equal(values[1], SEQ + 1)


@pytest.mark.parametrize(
    ("value", "found"),
    [
        (SEQ[:, :9], r"shapes \[\(50, 9\), \(50, 10\)\]"),
        (SEQ.astype(np.float64), r"dtypes \['float64', 'int64'\]"),
        (SEQ.astype(bool), r"dtypes \['bool', 'int64'\]"),
        (SEQ.tolist(), "a value is a list of 50 items"),
        (5, "a value is 5"),
    ],
)
def test_sequences_must_be_integer_arrays_of_shape_50_10(tmp_path, value, found):
    with pytest.raises(RecFlowFormatError, match=found):
        _sequences(_write(tmp_path, {1: SEQ, 2: value}))


def test_unsigned_values_that_do_not_fit_int64_are_refused(tmp_path):
    ok = SEQ.astype(np.uint64)
    bad = ok.copy()
    bad[49, 7] = 2**64 - 1  # a time of uint64 max: int64 would read -1
    _, values = _sequences(_write(tmp_path, {1: SEQ, 2: ok}))
    assert values.dtype == np.int64 and np.array_equal(values[1], SEQ)
    with pytest.raises(RecFlowFormatError, match=r"uint64 holds 18446744073709551615, which does not fit int64"):
        _sequences(_write(tmp_path, {1: SEQ, 2: bad}))


def test_narrower_integer_arrays_are_widened(tmp_path):
    _, values = _sequences(_write(tmp_path, {1: SEQ.astype(np.int32), 2: SEQ.astype(np.uint8)}))
    assert values.dtype == np.int64 and np.array_equal(values[0], SEQ) and np.array_equal(values[1], SEQ % 256)


def test_ubm_items_are_flattened_with_unknown_stages_counted(tmp_path):
    rows = np.arange(24, dtype=np.int64).reshape(3, 8)
    value = {
        4: {"realshow": rows, "rank_pos": rows[:1], "not_a_stage": rows, "unflagged": rows},
        9: {"coarse_neg": rows[:2].astype(np.int32)},
        7: {},
    }
    (batch,) = list(ubm_batches(_write(tmp_path, value), 10))
    assert batch.keys.tolist() == [4, 9, 7]
    assert batch.request_id.tolist() == [4, 4, 4, 4, 9, 9] and batch.item.tolist() == [0, 0, 0, 0, 1, 1]
    assert batch.stage.tolist() == [0, 0, 0, 3, 5, 5] and batch.matrix.dtype == np.int64
    assert batch.n_unknown == 2 and batch.unknown == {"'not_a_stage'", "'unflagged'"}


@pytest.mark.parametrize(
    ("value", "found"),
    [
        ({"realshow": np.zeros((2, 7), np.int64)}, r"stage 'realshow' of request 4 has shape \(2, 7\)"),
        ({"realshow": np.zeros(8, np.int64)}, r"has shape \(8,\)"),
        ({"realshow": np.zeros((2, 8))}, "has dtype float64"),
        ([np.zeros((2, 8), np.int64)], "the value of request 4 is a list of 1 items"),
    ],
)
def test_ubm_values_must_be_dicts_of_integer_stage_arrays(tmp_path, value, found):
    with pytest.raises(RecFlowFormatError, match=found):
        list(ubm_batches(_write(tmp_path, {4: value}), 10))


@pytest.mark.parametrize(
    ("value", "found"),
    [
        ({"video_id": 1.5e6}, "'video_id' has count 1500000.0"),
        ({"video_id": True}, "'video_id' has count True"),
        ({"video_id": -1}, "'video_id' has count -1"),
        ({"video_id": 2**40}, "'video_id' has count 1099511627776"),
        ({"video_id": "9"}, "'video_id' has count '9'"),
        ({7: 9}, "a key is 7"),
        ([("video_id", 9)], "holds a list of 1 items; expected a dict"),
    ],
)
def test_id_cnt_must_be_a_dict_of_counts(tmp_path, value, found):
    with pytest.raises(RecFlowFormatError, match=found):
        read_id_cnt(_write(tmp_path, value))


def test_id_cnt_reads_numpy_counts(tmp_path):
    assert read_id_cnt(_write(tmp_path, {"video_id": np.int64(9), "age": 3})) == {"video_id": 9, "age": 3}


_keys = st.one_of(
    st.integers(-(2**64), 2**64),
    st.floats(allow_nan=False),
    st.booleans(),
    st.text(max_size=3),
    st.none(),
    st.tuples(st.integers(0, 3)),
)
_values = st.one_of(
    st.just(SEQ),
    st.sampled_from([np.int8, np.int32, np.uint64, np.float32, bool]).map(SEQ.astype),
    st.builds(lambda r, c: np.zeros((r, c), np.int64), st.integers(0, 60), st.integers(0, 12)),
    st.integers(),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.just(np.zeros((1, 8), np.int64)), max_size=2),
)


@settings(
    max_examples=120, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(items=st.lists(st.tuples(_keys, _values), max_size=6), protocol=st.integers(0, 5))
def test_any_dict_gives_checked_sequences_or_a_format_error(tmp_path, items, protocol):
    value = dict(items)
    try:
        path = _write(tmp_path, value, protocol)
    except (pickle.PicklingError, TypeError, ValueError):  # unhashable or unpicklable draws
        return
    try:
        keys, values = _sequences(path)
    except RecFlowFormatError:
        return
    expected = [k for k in value]
    assert all(type(k) is int and 0 <= k < 2**63 for k in expected)
    assert keys.tolist() == expected and values.shape == (len(expected), 50, 10) and values.dtype == np.int64
