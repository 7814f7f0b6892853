import numpy as np
import pytest

from stcrank.data.recflow.pickle_builders import BUILDERS, ArraySlot, DtypeSlot, PickleContentError, make_array

STATE = (3, "<", None, None, None, -1, -1, 0)


def _dtype(spec="i8", state=STATE):
    slot = BUILDERS[("numpy", "dtype")](spec, False, True)
    slot.build(state)
    return slot


def test_only_plain_numeric_dtypes_are_rebuilt():
    assert _dtype().dtype == np.dtype("<i8") and _dtype("u1", (3, "|", *STATE[2:])).dtype == np.uint8
    assert _dtype("i4", (3, ">", *STATE[2:])).dtype == np.dtype(">i4")
    for spec in ("O8", "V8", "S4", "U4", "M8", "i16", "i8,i8"):
        with pytest.raises(PickleContentError, match="dtype"):
            _dtype(spec)
    for state in (
        (3, "<", None, ("a",), None, -1, -1, 0),  # names: a structured dtype
        (3, "<", None, None, {"a": 1}, -1, -1, 0),
        (3, "<", ("i8", (2,)), None, None, -1, -1, 0),  # a sub-array
        (3, "<", None, None, None, 8, 8, 63),  # the object flags
        (3, "|", None, None, None, -1, -1, 1),  # the refcount flag alone
        (4, "<", None, None, None, -1, -1, 0, {"meta": 1}),
        (2, "<", None, None, None, -1, -1, 0),
        (3, "x", None, None, None, -1, -1, 0),
    ):
        with pytest.raises(PickleContentError):
            _dtype("i8", state)
    slot = _dtype()
    with pytest.raises(PickleContentError, match="twice"):
        slot.build(STATE)


def test_arrays_need_exactly_their_bytes():
    dtype = _dtype()
    raw = np.arange(6, dtype="<i8").tobytes()
    assert make_array(raw, dtype, (2, 3), "C").tolist() == [[0, 1, 2], [3, 4, 5]]
    assert make_array(raw, dtype, (2, 3), "F").tolist() == [[0, 2, 4], [1, 3, 5]]
    for shape in ((2, 2), (7,), (2, -3), (1,) * 9, [2, 3], (2.0, 3)):
        with pytest.raises(PickleContentError):
            make_array(raw, dtype, shape, "C")
    with pytest.raises(PickleContentError, match="expected a numpy dtype"):
        make_array(raw, np.dtype("i8"), (6,), "C")
    slot = ArraySlot()
    slot.build((1, (6,), dtype, False, raw), None)
    assert slot.array.tolist() == list(range(6))
    with pytest.raises(PickleContentError, match="twice"):
        slot.build((1, (6,), dtype, False, raw), None)
    with pytest.raises(PickleContentError, match="raw bytes"):
        ArraySlot().build((1, (1,), dtype, False, [1]), None)  # an object array's state is a list


def test_scalars_and_latin1_bytes():
    assert BUILDERS[("numpy._core.multiarray", "scalar")](_dtype(), (7).to_bytes(8, "little")) == 7
    with pytest.raises(PickleContentError, match="over 4 bytes"):
        BUILDERS[("numpy.core.multiarray", "scalar")](_dtype(), b"abcd")
    assert BUILDERS[("_codecs", "encode")]("\x00\xff", "latin1") == b"\x00\xff"
    with pytest.raises(PickleContentError, match="only"):
        BUILDERS[("_codecs", "encode")]("abc", "rot13")
    assert isinstance(_dtype(), DtypeSlot)
