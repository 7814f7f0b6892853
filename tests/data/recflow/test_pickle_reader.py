"""The safe pickle reader on hostile input: plain data or a RecFlowFormatError, never a crash, within bounded memory.

The crafted pickles below are the known attacks on a restricted :class:`pickle.Unpickler` (each ran against the
previous reader with the result noted); the hypothesis tests cover the open-ended rest: mutations of valid RecFlow
pickles of every protocol, and random instruction streams.
"""

from __future__ import annotations

import contextlib
import json
import pickle
import struct
import subprocess
import sys
import tempfile
import textwrap
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stcrank.data.recflow import pickle_reader
from stcrank.data.recflow.errors import RecFlowFormatError
from stcrank.data.recflow.pickles import UnsafePickleError, iter_dict_pickle, load_pickle, loads_pickle

PROPS = settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


def _str(text: str) -> bytes:
    data = text.encode()
    return b"\x8c" + bytes([len(data)]) + data  # SHORT_BINUNICODE


def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _dtype(spec: str, order: str = "|", flags: int = 0) -> bytes:
    """numpy.dtype(spec) with a BUILD state of the given byte order and flags."""
    state = b"(K\x03" + _str(order) + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK" + bytes([flags]) + b"t"
    return _global("numpy", "dtype") + _str(spec) + b"\x89\x88\x87R" + state + b"b"


def _reconstruct(dtype: bytes, shape: bytes, raw: bytes) -> bytes:
    head = _global("numpy._core.multiarray", "_reconstruct") + _global("numpy", "ndarray") + b"K\x00\x85C\x01b\x87R"
    return head + b"(K\x01" + shape + dtype + b"\x89" + b"C" + bytes([len(raw)]) + raw + b"tb"


def _dict(*items: bytes) -> bytes:
    return b"\x80\x04}(" + b"".join(items) + b"u."


def _scalar(dtype: bytes, raw: bytes) -> bytes:
    return _global("numpy._core.multiarray", "scalar") + dtype + b"C" + bytes([len(raw)]) + raw + b"\x86R"


VALID_SEQ = pickle.dumps({i: np.arange(500, dtype=np.int64).reshape(50, 10) + i for i in range(40)}, protocol=4)


def _first_array_memo_index(data: bytes) -> int:
    """The memo index of the first array of a protocol 4 pickle (memoized right after its ``_reconstruct`` call)."""
    import pickletools

    count, reduced = 0, False
    for opcode, _, _ in pickletools.genops(data):
        if opcode.name == "MEMOIZE":
            if reduced:
                return count
            count += 1
        reduced = opcode.name == "REDUCE" and not reduced
    raise AssertionError("no array")


LATE_REFERENCE = VALID_SEQ[:-2] + b"J\xff\xff\xff\x7fh" + bytes([_first_array_memo_index(VALID_SEQ)]) + b"u."
"""A valid sequence pickle plus 8 bytes: one more item whose value refers back to the first array."""

ATTACKS: dict[str, bytes] = {
    # object dtype rebuilt through BUILD, then raw bytes read as PyObject pointers: SIGSEGV (exit 139) before
    "object scalar in id_cnt": _dict(_str("video_id") + _scalar(_dtype("O8", flags=0), b"A" * 8)),
    "object scalar, refcount flag": _dict(_str("video_id") + _scalar(_dtype("O8", flags=1), b"A" * 8)),
    "object array": _dict(b"K\x07" + _reconstruct(_dtype("O8", flags=63), b"K\x01\x85", b"A" * 8)),
    # an integer dtype whose state claims to hold references: memory corruption before
    "int64 with the refcount flag": _dict(b"K\x07" + _reconstruct(_dtype("i8", flags=1), b"K\x01\x85", b"A" * 8)),
    "int64 with every flag": _dict(b"K\x07" + _reconstruct(_dtype("i8", flags=63), b"K\x01\x85", b"A" * 8)),
    "structured dtype": _dict(b"K\x07" + _reconstruct(_dtype("V8"), b"K\x01\x85", b"A" * 8)),
    # a few bytes that allocate gigabytes
    "bytearray of 3e9": b"\x80\x02" + _global("builtins", "bytearray") + b"J\x00\x5e\xd0\xb2\x85R.",
    "memo index 2**27": b"\x80\x02Nr" + struct.pack("<I", 2**27) + b".",
    "billion laughs": b"\x80\x02]q\x00"
    + b"".join(b"(" + (b"h" + bytes([i - 1])) * 10 + b"lq" + bytes([i]) for i in range(1, 10))
    + b".",
    "stride-0 view of 2**25 rows": b"\x80\x04"
    + _global("numpy", "ndarray")
    + b"(J\x00\x00\x00\x02K\n\x86"
    + _dtype("i8", "<")
    + b"C\x50"
    + b"\x00" * 80
    + b"K\x00K\x00K\x08\x86tR.",
    "array larger than its bytes": _dict(
        b"K\x07" + _reconstruct(_dtype("i8", "<"), b"J\x00\x00\x00\x02\x85", b"\0" * 8)
    ),
    "BINBYTES8 of 2**62": b"\x80\x04\x8e" + struct.pack("<Q", 2**62) + b"xx.",
    "LONG4 of 2**30 bytes": b"\x80\x02\x8b" + struct.pack("<i", 2**30) + b"x.",
    "11 bytes: a late reference to an early array": LATE_REFERENCE,
    "a reference back to the top-level dict": b"\x80\x02}q\x00(K\x01h\x00u.",
    "a shared list appended after sharing": b"\x80\x02](h\x00h\x00l2K\x01a.",
    "DUP spam": b"\x80\x02]" + b"2" * 5000 + b".",
    "persistent id": b"\x80\x02Pabc\n.",
    "os.system": b"\x80\x02" + _global("os", "system") + b"X\x04\x00\x00\x00echo\x85R.",
    "a set": b"\x80\x04\x8f.",
    "out-of-band buffer": b"\x80\x05\x97.",
    "protocol 6": b"\x80\x06N.",
    "trailing pickle": b"\x80\x02N.\x80\x02N.",
}
"""Crafted pickles; each must be refused (or, for the memo index, read as the None it holds) in little memory."""

_CHILD = """
import json, sys
from stcrank.data.recflow.pickles import load_pickle, iter_dict_pickle
path, mode = sys.argv[1], sys.argv[2]
try:
    if mode == "load":
        result = load_pickle(path)
    else:
        result = [item for batch in iter_dict_pickle(path, batch_items=7, prune_items=5) for item in batch]
    outcome, message = "returned", type(result).__name__
except Exception as error:
    outcome, message = type(error).__name__, str(error)
    from stcrank.data.recflow.errors import RecFlowFormatError
    if isinstance(error, RecFlowFormatError):
        outcome = "RecFlowFormatError"
# VmHWM: the peak resident memory of this program (ru_maxrss would include the forking test process's)
peak_kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"outcome": outcome, "message": message, "peak_mb": peak_kb / 1024}))
"""


def _run_child(path, mode):
    # the address space is capped: an allocation of gigabytes fails in the child instead of swapping the machine
    limit = "import resource; resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))\n"
    done = subprocess.run(
        [sys.executable, "-c", limit + _CHILD, str(path), mode], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"the reader died (exit {done.returncode}): {done.stderr[-400:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def baseline_mb(tmp_path_factory):
    path = tmp_path_factory.mktemp("baseline") / "small.pkl"
    path.write_bytes(pickle.dumps({1: np.zeros((50, 10), np.int64)}, protocol=4))
    return _run_child(path, "load")["peak_mb"]


@pytest.mark.slow
@pytest.mark.parametrize("name", list(ATTACKS))
def test_crafted_attacks_are_refused_in_bounded_memory(tmp_path, name, baseline_mb):
    path = tmp_path / "hostile.pkl"
    path.write_bytes(ATTACKS[name])
    for mode in ("load", "stream"):
        result = _run_child(path, mode)
        assert result["outcome"] in ("RecFlowFormatError", "returned"), result
        if name not in ("memo index 2**27", "11 bytes: a late reference to an early array"):
            assert result["outcome"] == "RecFlowFormatError", result
        if result["outcome"] == "RecFlowFormatError":
            assert str(path) in result["message"]
        # the reader's own cap is 16 x the file + 64 MiB; in practice these need next to nothing
        assert result["peak_mb"] < baseline_mb + 80, result


def test_object_and_structured_dtypes_are_named():
    with pytest.raises(RecFlowFormatError, match=r"hostile\.pkl: holds a dtype 'O8'.*integer arrays"):
        loads_pickle(ATTACKS["object scalar in id_cnt"], "hostile.pkl")
    with pytest.raises(RecFlowFormatError, match=r"with size -1, alignment -1 and flags 1.*plain numeric dtype"):
        loads_pickle(ATTACKS["int64 with the refcount flag"])
    with pytest.raises(RecFlowFormatError, match=r"a dtype 'V8'"):
        loads_pickle(ATTACKS["structured dtype"])
    with pytest.raises(RecFlowFormatError, match=r"shape \(33554432,\) and dtype <i8 \(268435456 bytes\) over 8 bytes"):
        loads_pickle(ATTACKS["array larger than its bytes"])
    with pytest.raises(UnsafePickleError, match=r"refused to unpickle builtins\.bytearray"):
        loads_pickle(ATTACKS["bytearray of 3e9"])


def test_a_late_reference_to_an_early_array_is_read_again_from_the_file(tmp_path):
    path = tmp_path / "seq.pkl"
    path.write_bytes(ATTACKS["11 bytes: a late reference to an early array"])
    items = [item for batch in iter_dict_pickle(path, batch_items=7, prune_items=5) for item in batch]
    assert len(items) == 41 and items[-1][0] == 2**31 - 1
    assert np.array_equal(items[-1][1], items[0][1])


def test_the_budget_refuses_a_pickle_out_of_proportion(monkeypatch):
    array = np.zeros(1 << 16, np.int64)  # 512 KiB, referenced 20,000 times: 10 GB once every value is copied
    data = pickle.dumps(dict.fromkeys(range(20_000), array), protocol=4)
    assert len(data) < 1 << 20
    monkeypatch.setattr(pickle_reader, "BUDGET_FLOOR", 1 << 20)
    with pytest.raises(RecFlowFormatError, match=r"decodes to more than .* out of proportion"):
        loads_pickle(data)


def test_memo_entries_are_capped(monkeypatch):
    monkeypatch.setattr(pickle_reader, "MEMO_FLOOR", 100)
    data = b"\x80\x04N" + b"\x94" * 200 + b"."
    with pytest.raises(RecFlowFormatError, match="memo entries at once"):
        loads_pickle(data)


# -- fidelity: what pickle.loads gives, for everything a RecFlow pickle may hold ---------------------------------------

_dtypes = st.sampled_from(["<i8", "<i4", "<i2", "|i1", "<u8", "<u4", "|u1", ">i8", ">i4", "<f8", "<f4", "|b1"])
_arrays = st.builds(
    lambda dtype, shape, fortran, seed: (lambda a: np.asfortranarray(a) if fortran and a.ndim > 1 else a)(
        np.random.default_rng(seed).integers(0, 100, size=shape).astype(np.dtype(dtype))
    ),
    _dtypes,
    st.lists(st.integers(0, 6), min_size=0, max_size=3).map(tuple),
    st.booleans(),
    st.integers(0, 1000),
)
_leaves = st.one_of(
    _arrays,
    st.integers(-(2**63), 2**63 - 1),
    st.text(max_size=8),
    st.none(),
    st.booleans(),
    st.floats(allow_nan=False),
    st.binary(max_size=80),
)
_values = st.recursive(
    _leaves,
    lambda inner: st.one_of(
        st.dictionaries(st.one_of(st.integers(0, 10**6), st.text(max_size=6)), inner, max_size=4),
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=3).map(tuple),
    ),
    max_leaves=8,
)


def _equal(got, expected) -> bool:
    if isinstance(expected, np.ndarray):
        return (
            type(got) is np.ndarray
            # numpy itself turns some big-endian arrays native when it unpickles them: compare the byte order's kind
            and got.dtype.newbyteorder("=") == expected.dtype.newbyteorder("=")
            and got.shape == expected.shape
            and np.array_equal(got, expected)
        )
    if isinstance(expected, dict):
        return type(got) is dict and list(got) == list(expected) and all(_equal(got[k], expected[k]) for k in expected)
    if isinstance(expected, list | tuple):
        return (
            type(got) is type(expected)
            and len(got) == len(expected)
            and all(_equal(g, e) for g, e in zip(got, expected, strict=True))
        )
    return type(got) is type(expected) and got == expected


@PROPS
@given(value=st.dictionaries(st.integers(0, 2**40), _values, max_size=6), protocol=st.integers(0, 5))
def test_plain_data_and_arrays_read_as_pickle_reads_them(value, protocol):
    data = pickle.dumps(value, protocol=protocol)
    assert _equal(loads_pickle(data), pickle.loads(data))


# -- hostile input: mutations of valid pickles and random instruction streams ------------------------------------------

_SEED_PICKLES = [
    pickle.dumps(value, protocol=protocol)
    for protocol in range(6)
    for value in (
        {7: np.arange(500, dtype=np.int64).reshape(50, 10), 9: np.ones((50, 10), np.int64)},
        {7: {"realshow": np.arange(16, dtype=np.int64).reshape(2, 8), "rank_pos": np.zeros((0, 8), np.int64)}},
        {"video_id": 400, "user_id": np.int64(20)},
    )
]


def _check_bounded(data: bytes) -> None:
    """Read ``data`` whole and streamed: a value or RecFlowFormatError, with traced memory within the budget."""
    cap = pickle_reader.BUDGET_FACTOR * len(data) + pickle_reader.BUDGET_FLOOR
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "mutated.pkl"
        path.write_bytes(data)
        tracemalloc.start()
        try:
            for read in (
                lambda: loads_pickle(data),
                lambda: load_pickle(path),
                lambda: [item for batch in iter_dict_pickle(path, batch_items=2, prune_items=2) for item in batch],
            ):
                with contextlib.suppress(RecFlowFormatError):  # UnsafePickleError included
                    read()
            assert tracemalloc.get_traced_memory()[1] <= cap
        finally:
            tracemalloc.stop()


_mutations = st.lists(
    st.tuples(
        st.sampled_from(["flip", "set", "insert", "delete", "truncate", "duplicate"]),
        st.integers(0, 10**6),
        st.integers(0, 255),
        st.binary(min_size=1, max_size=12),
    ),
    min_size=1,
    max_size=4,
)


def _mutate(data: bytes, mutations) -> bytes:
    out = bytearray(data)
    for kind, where, byte, blob in mutations:
        at = where % max(len(out), 1)
        if kind == "flip" and out:
            out[at] ^= 1 << (byte % 8)
        elif kind == "set" and out:
            out[at] = byte
        elif kind == "insert":
            out[at:at] = blob
        elif kind == "delete":
            del out[at : at + len(blob)]
        elif kind == "truncate":
            del out[at:]
        elif kind == "duplicate":
            out[at:at] = out[at : at + 1 + byte]
    return bytes(out)


@PROPS
@given(seed=st.sampled_from(range(len(_SEED_PICKLES))), mutations=_mutations)
def test_mutated_pickles_give_data_or_a_format_error_in_bounded_memory(seed, mutations):
    _check_bounded(_mutate(_SEED_PICKLES[seed], mutations))


_OPS = [
    b"(",
    b"}",
    b"]",
    b")",
    b"N",
    b"\x88",
    b"2",
    b"0",
    b"1",
    b"t",
    b"l",
    b"d",
    b"\x85",
    b"\x86",
    b"\x87",
    b"a",
    b"e",
    b"s",
    b"u",
    b"R",
    b"b",
    b"\x94",
    b"K\x05",
    b"J\xff\xff\xff\x7f",
    b"\x8a\x09" + b"\xff" * 9,
    b"h\x00",
    b"h\x01",
    b"h\x02",
    b"q\x00",
    b"q\x01",
    b"r\xff\xff\xff\x7f",
    b"j\xff\xff\xff\x7f",
    b"C\x01b",
    b"C\x08AAAAAAAA",
    b"B\x00\x00\x01\x00",
    b"\x8e" + struct.pack("<Q", 2**40),
    b"\x96\x08\x00\x00\x00\x00\x00\x00\x00AAAAAAAA",
    _str("i8"),
    _str("O8"),
    _str("<"),
    _str("C"),
    _global("numpy", "dtype"),
    _global("numpy", "ndarray"),
    _global("numpy.core.multiarray", "_reconstruct"),
    _global("numpy._core.multiarray", "scalar"),
    _global("numpy._core.numeric", "_frombuffer"),
    _global("_codecs", "encode"),
    _str("numpy") + _str("dtype") + b"\x93",
    b"\x95\x08\x00\x00\x00\x00\x00\x00\x00",
    b"\x80\x04",
    b"I01\n",
    b"L123L\n",
    b"Vabc\n",
    b"S'ab'\n",
    b"F1.5\n",
    b"g0\n",
    b"p0\n",
]


@PROPS
@given(ops=st.lists(st.sampled_from(_OPS), max_size=60), stop=st.booleans())
def test_random_instruction_streams_give_data_or_a_format_error_in_bounded_memory(ops, stop):
    _check_bounded(b"".join(ops) + (b"." if stop else b""))


def test_load_pickle_names_a_missing_file(tmp_path):
    with pytest.raises(RecFlowFormatError, match="not found"):
        load_pickle(tmp_path / "absent.pkl")
    script = textwrap.dedent("""
        from stcrank.data.recflow.pickles import loads_pickle
        print(loads_pickle(b"\\x80\\x02}q\\x00(K\\x01K\\x02u."))
    """)
    assert subprocess.run([sys.executable, "-c", script], capture_output=True, text=True).stdout.strip() == "{1: 2}"
