"""The one-step reading of an array's instructions gives exactly what interpreting them one by one gives."""

from __future__ import annotations

import pickle

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stcrank.data.recflow import pickle_reader
from stcrank.data.recflow.pickles import iter_dict_pickle

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


def _without_shortcut(read):
    saved = pickle_reader.read_reconstruct, pickle_reader.read_frombuffer
    pickle_reader.read_reconstruct = pickle_reader.read_frombuffer = lambda *args: None
    try:
        return read()
    finally:
        pickle_reader.read_reconstruct, pickle_reader.read_frombuffer = saved


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
    value = {i: np.full((50, 10), i, np.int64) for i in range(50)}
    path = tmp_path / "seq.pkl"
    for protocol in (3, 4):
        path.write_bytes(pickle.dumps(value, protocol=protocol))
        got = dict(item for batch in iter_dict_pickle(path) for item in batch)
        assert _equal(got, value)
    assert len(calls) == 98 and all(calls)  # every array but the first of each file (its globals come inline)
