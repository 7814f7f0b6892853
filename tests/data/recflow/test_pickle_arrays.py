"""The one-step reading of an array's instructions gives exactly what interpreting them one by one gives."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stcrank.data.recflow import pickle_arrays, pickle_reader
from stcrank.data.recflow.pickle_input import PickleInput
from stcrank.data.recflow.pickles import DictPickleWriter, iter_dict_pickle

_dtypes = st.sampled_from(["<i8", "<i4", "|u1", ">i8", "<u8", "<f8", "|b1"])
_arrays = st.builds(
    lambda dtype, shape, fortran, seed: (lambda a: np.asfortranarray(a) if fortran and a.ndim > 1 else a)(
        np.random.default_rng(seed).integers(0, 100, size=shape).astype(np.dtype(dtype))
    ),
    _dtypes,
    st.lists(st.integers(0, 300), min_size=0, max_size=3).map(tuple).filter(lambda s: np.prod(s) < 20_000),
    st.booleans(),
    st.integers(0, 1000),
)


def _equal(got, expected) -> bool:
    if isinstance(expected, np.ndarray):
        return (
            type(got) is np.ndarray
            and got.dtype.newbyteorder("=") == expected.dtype.newbyteorder("=")
            and got.shape == expected.shape
            and np.array_equal(got, expected)
        )
    if isinstance(expected, dict):
        return type(got) is dict and list(got) == list(expected) and all(_equal(got[k], expected[k]) for k in expected)
    return type(got) is type(expected) and got == expected


def _no_run(reader, buf, pos, end, memo, count, stack):
    return buf, pos, end, count


def _without_shortcut(read):
    saved = pickle_reader.read_reconstruct, pickle_reader.read_frombuffer, pickle_reader.read_array_items
    pickle_reader.read_reconstruct = pickle_reader.read_frombuffer = lambda *args: None
    pickle_reader.read_array_items = _no_run
    try:
        return read()
    finally:
        pickle_reader.read_reconstruct, pickle_reader.read_frombuffer, pickle_reader.read_array_items = saved


@settings(
    max_examples=120, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    value=st.dictionaries(
        st.integers(0, 2**40), st.one_of(_arrays, st.dictionaries(st.text(max_size=4), _arrays)), max_size=30
    ),
    protocol=st.integers(2, 5),
    prune=st.integers(1, 9),
)
def test_streaming_with_the_shortcut_or_without_gives_the_same_items(tmp_path, value, protocol, prune):
    path = tmp_path / "d.pkl"
    # shared arrays: later items refer back to earlier ones, across prunings (RecFlow pickles share no dicts)
    shared = [(k, v) for k, v in value.items() if isinstance(v, np.ndarray)]
    value = {**value, **{k + 2**41: v for k, v in shared[: len(shared) // 2 + 1]}}
    path.write_bytes(pickle.dumps(value, protocol=protocol))
    fast = [item for batch in iter_dict_pickle(path, batch_items=4, prune_items=prune) for item in batch]
    slow = _without_shortcut(lambda: [i for b in iter_dict_pickle(path, batch_items=3, prune_items=prune) for i in b])
    assert _equal(dict(fast), value) and _equal(dict(slow), value)


def test_the_shortcut_reads_the_arrays_of_python_s_pickler(tmp_path, monkeypatch):
    calls = []
    original = pickle_reader.read_reconstruct

    def counting(*args):
        result = original(*args)
        calls.append(result is not None)
        return result

    monkeypatch.setattr(pickle_reader, "read_reconstruct", counting)
    monkeypatch.setattr(pickle_arrays, "read_reconstruct", counting)  # the items read in a run
    value = {i: np.full((50, 10), i, np.int64) for i in range(50)}
    path = tmp_path / "seq.pkl"
    for protocol in (3, 4):
        path.write_bytes(pickle.dumps(value, protocol=protocol))
        got = dict(item for batch in iter_dict_pickle(path) for item in batch)
        assert _equal(got, value)
    assert len(calls) == 98 and all(calls)  # every array but the first of each file (its globals come inline)


def _read_with_charges(path, **options):
    reader = pickle_reader.PickleReader(PickleInput(path=path), stream=True, **options)
    items = [item for batch in reader.items() for item in batch]
    return items, reader.charged


@pytest.mark.parametrize("protocol", [2, 3, 4, 5, "writer"])
def test_runs_of_items_read_as_the_instructions_do(tmp_path, protocol):
    # keys of every int instruction (BININT1, BININT2, BININT, LONG1 of 1 to 8 bytes, negative ones), more items
    # than a pickler batch, one array in Fortran order, one of another dtype
    keys = [0, 7, 255, 256, 65535, 65536, 2**31 - 1, 2**31, -1, -(2**31), 2**40 + 3, 2**63 - 1, *range(1000, 2300)]
    rng = np.random.default_rng(0)
    value = {key: rng.integers(0, 10**9, (50, 10)) for key in keys}
    value[255] = np.asfortranarray(value[255])
    value[256] = value[256].astype(np.int32)
    path = tmp_path / "seq.pkl"
    if protocol == "writer":  # the generator's layout: a fresh memo per batch, PROTO before every key and value
        with DictPickleWriter(path) as writer:
            writer.write(value.items())
    else:
        path.write_bytes(pickle.dumps(value, protocol=protocol))
    for prune in (None, 300):
        fast, fast_charged = _read_with_charges(path, batch_items=256, prune_items=prune)
        slow, slow_charged = _without_shortcut(
            lambda prune=prune: _read_with_charges(path, batch_items=256, prune_items=prune)
        )
        assert [k for k, _ in fast] == [k for k, _ in slow] == list(value)
        assert all(_equal(a, b) and _equal(a, value[k]) for (k, a), (_, b) in zip(fast, slow, strict=True))
        assert fast_charged == slow_charged  # the same budget, instruction by instruction


def test_a_run_reads_the_items_of_the_generator_s_layout(tmp_path, monkeypatch):
    runs = []
    original = pickle_reader.read_array_items

    def counting(reader, buf, pos, end, memo, count, stack):
        before = len(stack)
        result = original(reader, buf, pos, end, memo, count, stack)
        runs.append((len(stack) - before) // 2)
        return result

    monkeypatch.setattr(pickle_reader, "read_array_items", counting)
    path = tmp_path / "seq.pkl"
    with DictPickleWriter(path) as writer:
        writer.write((i, np.full((50, 10), i, np.int64)) for i in range(2500))
    got = [item for batch in iter_dict_pickle(path) for item in batch]
    assert [k for k, _ in got] == list(range(2500)) and all((a == k).all() for k, a in got)
    # each batch of the writer starts with an array whose globals come inline; the run reads all the others
    assert sum(runs) == 2500 - 3
