import os
import pickle

import numpy as np
import pytest

from stcrank.data.recflow.errors import RecFlowFormatError
from stcrank.data.recflow.pickles import UnsafePickleError, load_pickle, loads_pickle

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
