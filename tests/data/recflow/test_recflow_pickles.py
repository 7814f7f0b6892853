import collections
import os
import pickle

import numpy as np
import pytest

from stcrank.data.recflow.errors import RecFlowFormatError
from stcrank.data.recflow.pickles import UnsafePickleError, iter_dict_pickle, load_pickle, loads_pickle

SAMPLE = {
    7: {"realshow": np.arange(16, dtype=np.int64).reshape(2, 8), "rank_pos": np.zeros((0, 8), np.int64)},
    9: np.ones((50, 10), dtype=np.int64),
    "count": np.int64(3),
    "ratio": 0.5,
    "pair": (1, [2, 3]),
}


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo unsafe",))


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_accepts_dicts_of_numpy_arrays_under_every_protocol(protocol):
    loaded = loads_pickle(pickle.dumps(SAMPLE, protocol=protocol))
    assert np.array_equal(loaded[7]["realshow"], SAMPLE[7]["realshow"])
    assert loaded[7]["realshow"].dtype == np.int64 and loaded[7]["rank_pos"].shape == (0, 8)
    assert loaded[9].shape == (50, 10) and loaded["count"] == 3 and loaded["pair"] == (1, [2, 3])


@pytest.mark.parametrize("spelling", [b"numpy.core.multiarray", b"numpy._core.multiarray"])
def test_accepts_both_numpy_module_spellings(spelling):
    data = pickle.dumps(SAMPLE, protocol=2)
    data = data.replace(b"numpy._core.multiarray", spelling).replace(b"numpy.core.multiarray", spelling)
    assert spelling in data
    assert np.array_equal(loads_pickle(data)[9], SAMPLE[9])


def test_refuses_a_pickle_that_would_run_code(tmp_path, capfd):
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({1: _RunsCode()}))
    with pytest.raises(UnsafePickleError) as caught:
        load_pickle(path)
    message = str(caught.value)
    assert str(path) in message and "system" in message
    assert caught.value.name == "system"
    assert "unsafe" not in capfd.readouterr().out


@pytest.mark.parametrize("global_name", [b"cbuiltins\neval\n", b"cnumpy\nload\n", b"ccopyreg\n_reconstructor\n"])
def test_refuses_any_other_global(global_name):
    with pytest.raises(UnsafePickleError):
        loads_pickle(global_name + b"(tR.", "crafted.pkl")


def test_refuses_codecs_other_than_latin1():
    crafted = b"c_codecs\nencode\n(Vabc\nVrot13\ntR."
    with pytest.raises(RecFlowFormatError):
        loads_pickle(crafted)


def test_truncated_and_missing_files_are_format_errors(tmp_path):
    path = tmp_path / "cut.pkl"
    path.write_bytes(pickle.dumps(SAMPLE)[:-40])
    with pytest.raises(RecFlowFormatError, match=r"cut\.pkl"):
        load_pickle(path)
    with pytest.raises(RecFlowFormatError, match="not found"):
        load_pickle(tmp_path / "absent.pkl")


def test_dict_pickle_writer_streams_an_ordinary_dict(tmp_path):
    from stcrank.data.recflow.pickles import DictPickleWriter

    expected = {i: {"realshow": np.full((i % 3, 8), i, dtype=np.int64)} for i in range(10)}
    path = tmp_path / "streamed.pkl"
    with DictPickleWriter(path) as writer:
        writer.write(list(expected.items())[:4])
        writer.write([])
        writer.write(list(expected.items())[4:])
    for loaded in (load_pickle(path), pickle.loads(path.read_bytes())):
        assert list(loaded) == list(expected)
        assert all(np.array_equal(loaded[k]["realshow"], expected[k]["realshow"]) for k in expected)
        assert all(loaded[k]["realshow"].dtype == np.int64 for k in expected)
    truncated = tmp_path / "truncated.pkl"
    truncated.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(RecFlowFormatError, match="truncated"):
        load_pickle(truncated)


def _items(path, **options):
    return [item for batch in iter_dict_pickle(path, **options) for item in batch]


def _same_items(got, expected):
    assert [key for key, _ in got] == list(expected)
    for key, value in got:
        if isinstance(expected[key], np.generic):  # numpy scalars read as the Python value
            assert type(value) is type(expected[key].item()) and value == expected[key]
            continue
        assert type(value) is type(expected[key])
        if isinstance(value, np.ndarray):
            assert value.dtype == expected[key].dtype and np.array_equal(value, expected[key])
        elif isinstance(value, dict):
            assert list(value) == list(expected[key])
            assert all(np.array_equal(value[s], expected[key][s]) for s in value)
        else:
            assert value == expected[key]


STREAMED = {
    **{int(k): np.arange(k, k + 500, dtype=np.int64).reshape(50, 10) for k in (np.arange(2600) * 7919) % 10007},
    -1: {"realshow": np.zeros((2, 8), np.int32), "rank_pos": np.ones((0, 8), np.int64)},
    "name": "x" * 200,
    "scalar": np.int64(5),
    "pair": (1, [2, 3]),
}


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_iter_dict_pickle_yields_the_items_in_file_order_under_every_protocol(tmp_path, protocol):
    path = tmp_path / "seq.pkl"
    path.write_bytes(pickle.dumps(STREAMED, protocol=protocol))
    batches = list(iter_dict_pickle(path, batch_items=300))
    assert all(len(batch) == 300 for batch in batches[:-1]) and 0 < len(batches[-1]) <= 300
    _same_items([item for batch in batches for item in batch], STREAMED)
    _same_items(_items(path, prune_items=3), STREAMED)  # pruned every few items: still the same items


@pytest.mark.parametrize("n", [0, 1, 1000, 1001, 2999])
def test_iter_dict_pickle_sizes_and_the_writer(tmp_path, n):
    from stcrank.data.recflow.pickles import DictPickleWriter

    expected = {i: np.full((i % 3, 8), i, dtype=np.int64) for i in range(n)}
    (tmp_path / "dumped.pkl").write_bytes(pickle.dumps(expected, protocol=4))  # 1001 items: a one-item SETITEM last
    _same_items(_items(tmp_path / "dumped.pkl", prune_items=700), expected)
    with DictPickleWriter(tmp_path / "written.pkl") as writer:
        writer.write(list(expected.items())[:7])
        writer.write(list(expected.items())[7:])
    _same_items(_items(tmp_path / "written.pkl", prune_items=900), expected)


def test_iter_dict_pickle_memory_is_bounded_by_the_pruning_interval(tmp_path):
    import gc
    import weakref

    path = tmp_path / "big.pkl"
    path.write_bytes(pickle.dumps({i: np.full((50, 10), i) for i in range(3000)}, protocol=4))
    stream = iter_dict_pickle(path, batch_items=100, prune_items=200)
    first = next(stream)
    alive = weakref.ref(first[0][1])
    del first
    for _ in range(10):
        next(stream)
    gc.collect()
    assert alive() is None  # the unpickler's memo no longer holds the first arrays
    stream.close()


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_iter_dict_pickle_items_sharing_an_array_read_it_again_from_the_file(tmp_path, protocol):
    shared = np.arange(12)
    expected = {i: shared for i in range(2500)}  # Python's pickler refers back to it from later batches of 1000
    path = tmp_path / "shared.pkl"
    path.write_bytes(pickle.dumps(expected, protocol=protocol))
    _same_items(_items(path, batch_items=400, prune_items=300), expected)


def test_iter_dict_pickle_refuses_other_top_levels(tmp_path):
    path = tmp_path / "ordered.pkl"
    path.write_bytes(pickle.dumps(collections.OrderedDict([(1, np.ones(3)), (2, np.zeros(3))])))
    with pytest.raises(UnsafePickleError, match=r"ordered\.pkl: refused to unpickle collections\.OrderedDict"):
        _items(path)
    path.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(RecFlowFormatError, match=r"ordered\.pkl: holds a list of 3 items at the top level"):
        _items(path)


def test_iter_dict_pickle_refuses_unsafe_truncated_and_missing_files(tmp_path, capfd):
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({**{i: np.zeros(3) for i in range(2500)}, 9999: _RunsCode()}))
    with pytest.raises(UnsafePickleError, match=r"evil\.pkl") as caught:
        _items(path, prune_items=100)
    assert caught.value.name == "system" and "unsafe" not in capfd.readouterr().out
    data = pickle.dumps({i: np.zeros((50, 10)) for i in range(2000)})
    for cut in (len(data) // 2, len(data) - 1, 12):
        path.write_bytes(data[:cut])
        with pytest.raises(RecFlowFormatError, match=r"evil\.pkl: .*(truncated|corrupt)"):
            _items(path)
    with pytest.raises(RecFlowFormatError, match="not found"):
        _items(tmp_path / "absent.pkl")


def test_iter_dict_pickle_stops_cleanly_when_the_reader_stops(tmp_path):
    import threading

    path = tmp_path / "many.pkl"
    path.write_bytes(pickle.dumps({i: np.zeros(4) for i in range(20000)}))
    before = threading.active_count()
    for batch in iter_dict_pickle(path, batch_items=10):
        assert len(batch) == 10
        break
    assert threading.active_count() == before


def test_iter_dict_pickle_top_level_dict_takes_items_only(tmp_path):
    path = tmp_path / "crafted.pkl"
    # the top-level dict (memo 0) fetched again and BUILD with a state that would replace its attributes
    path.write_bytes(b"\x80\x02}q\x00h\x00}X\x07\x00\x00\x00_streamK\x01sb0(K\x01K\x02u.")
    with pytest.raises(RecFlowFormatError, match=r"crafted\.pkl"):
        _items(path)
    path.write_bytes(b"\x80\x02}q\x00(K\x01Pstcrank-dict-sink\nu.")  # a persistent id of the file's own
    with pytest.raises(UnsafePickleError, match=r"crafted\.pkl"):
        _items(path)


def _globals_of(data: bytes) -> set[str]:
    import pickletools

    return {arg for op, arg, _ in pickletools.genops(data) if op.name in ("GLOBAL", "STACK_GLOBAL")}


def test_dict_pickle_writer_names_numpy1_globals_like_the_release(tmp_path):
    from stcrank.data.recflow.pickles import DictPickleWriter

    expected = {i: np.arange(20, dtype=np.int64).reshape(2, 10) + i for i in range(2500)}  # several batches
    path = tmp_path / "numpy1.pkl"
    with DictPickleWriter(path) as writer:
        writer.write(expected.items())
    data = path.read_bytes()
    assert _globals_of(data) == {"numpy.core.multiarray _reconstruct", "numpy ndarray", "numpy dtype"}
    assert b"numpy._core" not in data
    for loaded in (load_pickle(path), pickle.loads(data)):
        assert list(loaded) == list(expected)
        assert all(np.array_equal(loaded[k], expected[k]) for k in expected)
    # The reader keeps reading numpy 2's spelling too.
    modern = tmp_path / "numpy2.pkl"
    modern.write_bytes(pickle.dumps(expected, protocol=3))
    assert "numpy._core.multiarray _reconstruct" in _globals_of(modern.read_bytes())
    loaded = load_pickle(modern)
    assert all(np.array_equal(loaded[k], expected[k]) for k in expected)
