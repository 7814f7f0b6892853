"""One-step reading of the byte patterns Python's pickler writes for one numpy array (protocols 3 to 5).

A numpy array is about 25 pickle instructions (the ``_reconstruct`` call, its arguments, the state tuple, the
``BUILD``), and a RecFlow pickle is little else, so interpreting them one by one in Python is most of the reading
time. When :class:`~stcrank.data.recflow.pickle_reader.PickleReader` meets a reference to numpy's ``_reconstruct``
(or ``_frombuffer``, protocol 5), it tries the functions here: a regular expression matches the whole instruction
sequence as Python's pickler writes it, and the array is built at once with exactly the effects the instructions
would have had (the same memo entries, charges and checks, through the same
:mod:`~stcrank.data.recflow.pickle_builders`). Anything else (another layout, a memo reference to an entry the
sequence itself stores, a payload past the buffer) returns None and the reader interprets the instructions one
by one, so this is a shortcut, never a second interpretation of the format.

:func:`read_array_items` goes one step further for the dicts of arrays RecFlow pickles are (request id -> array):
inside a batch of a dict's items it reads one ``int key, array`` item after the other without going back to the
reader's instruction loop, with the same effects per item (the key pushed and charged as its instruction would
be, the array through :func:`read_reconstruct`), and stops at the first item of another form.
"""

from __future__ import annotations

import re
import struct
from typing import TYPE_CHECKING, Any

from numpy import frombuffer

from stcrank.data.recflow.pickle_builders import (
    ArraySlot,
    DtypeSlot,
    Global,
    PickleContentError,
    PickleFormatError,
    build_empty_array,
    make_array,
)
from stcrank.data.recflow.pickle_input import BLOCK

if TYPE_CHECKING:
    from stcrank.data.recflow.pickle_reader import PickleReader

_GET = rb"(?:h(.)|j(.{4}))"  # BINGET, LONG_BINGET
_PUT = rb"(?:q(.)|r(.{4})|(\x94))"  # BINPUT, LONG_BINPUT, MEMOIZE
_INTS = rb"((?:K.|M..|J.{4}){1,3})([\x85\x86\x87])"  # 1 to 3 ints and TUPLE1/2/3
_BYTES = rb"(?:C(.)|B(.{4})|\x8e(.{8})|(\x96)(.{8}))"  # SHORT_BINBYTES, BINBYTES, BINBYTES8, BYTEARRAY8

_G = rb"(h.|j.{4})"  # BINGET or LONG_BINGET, with its index
_P = rb"(q.|r.{4}|\x94)"  # BINPUT, LONG_BINPUT (with its index) or MEMOIZE

RECONSTRUCT = re.compile(
    _G  # numpy.ndarray
    + rb"K\x00\x85"
    + _P  # (0,)
    + rb"(?:"
    + _G
    + rb"|C\x01b"
    + _P
    + rb")"  # b"b", referred to or written
    + rb"\x87"
    + _P  # (ndarray, (0,), b"b")
    + rb"R"
    + _P  # _reconstruct(...): the empty array
    + rb"\(K\x01((?:K.|M..|J.{4}){1,3})([\x85\x86\x87])"
    + _P  # MARK, 1, the shape
    + _G  # the dtype
    + rb"([\x88\x89])"  # is_fortran
    + rb"(?:C(.)|B(.{4}))",  # the raw data's length
    re.DOTALL,
)
"""Everything of a protocol 3 or 4 array after the reference to ``_reconstruct``, up to its raw data."""
RECONSTRUCT_TAIL = re.compile(_P + rb"t" + _P + rb"b", re.DOTALL)
"""After the raw data: its memo entry, the state tuple, its memo entry, ``BUILD``."""

_NOOPS = rb"(?:\x95.{8}|\x80[\x00-\x05])*"  # FRAME, and PROTO of a known protocol: no effect on the reader
ITEM = re.compile(
    _NOOPS
    + rb"(?:J(.{4})|K(.)|M(..)|\x8a(\x01.|\x02.{2}|\x03.{3}|\x04.{4}|\x05.{5}|\x06.{6}|\x07.{7}|\x08.{8}))"
    + _NOOPS
    + rb"(?:h(.)|j(.{4}))",
    re.DOTALL,
)
"""The start of a dict item ``int key -> array``: the key (``BININT1``, ``BININT2``, ``BININT`` or ``LONG1`` of up
to 8 bytes) and the reference to numpy's ``_reconstruct`` (frames and protocol marks may come between)."""
_REFILL = 1 << 16  # bytes left in the block under which a run of items reads the next block first

FROMBUFFER = re.compile(rb"\(" + _BYTES, re.DOTALL)
"""A protocol 5 array after the reference to ``_frombuffer``, up to its raw data."""
FROMBUFFER_TAIL = re.compile(
    _PUT + _GET + _INTS + _PUT + rb"(?:" + _GET + rb"|\x8c\x01([CF])" + _PUT + rb")t" + _PUT + rb"R" + _PUT,
    re.DOTALL,
)
"""After the raw data: its memo entry, the dtype, the shape, the order, the argument tuple, ``REDUCE``."""

_U16 = struct.Struct("<H").unpack_from
_I32 = struct.Struct("<i").unpack_from
_U32 = struct.Struct("<I").unpack_from
_U64 = struct.Struct("<Q").unpack_from
_MEMOIZE = -1
_LONG_BINPUTS = {k: struct.Struct("<" + "xI" * k).unpack for k in (6, 7)}  # the indices of k LONG_BINPUTs


def _get(short: bytes | None, long: bytes | None) -> int:
    return short[0] if short is not None else _U32(long)[0]  # type: ignore[arg-type]


def _put(short: bytes | None, long: bytes | None, memoize: bytes | None) -> int:
    if short is not None:
        return short[0]
    if long is not None:
        return _U32(long)[0]
    return _MEMOIZE


def _length(groups: tuple[Any, ...], i: int) -> tuple[int, bool]:
    """The payload length of the ``_BYTES`` groups starting at ``i``, and whether it is a bytearray."""
    if groups[i] is not None:
        return groups[i][0], False
    if groups[i + 1] is not None:
        return _U32(groups[i + 1])[0], False
    if groups[i + 2] is not None:
        return _U64(groups[i + 2])[0], False
    return _U64(groups[i + 4])[0], True


def _shape(ints: bytes, tuple_op: int) -> tuple[int, ...] | None:
    out = []
    i = 0
    while i < len(ints):
        kind = ints[i]
        if kind == 0x4B:  # BININT1
            out.append(ints[i + 1])
            i += 2
        elif kind == 0x4D:  # BININT2
            out.append(_U16(ints, i + 1)[0])
            i += 3
        else:  # BININT
            value = _I32(ints, i + 1)[0]
            if value < 0:
                return None
            out.append(value)
            i += 5
    return tuple(out) if len(out) == tuple_op - 0x84 else None


class _Stores:
    """The memo entries an instruction sequence stores, in order: their indices first, then their values.

    ``MEMOIZE`` takes the memo's count as its index and a ``PUT`` to a new index adds one to it, as the reader does.
    """

    def __init__(self, memo: dict[int, Any], count: int) -> None:
        self.memo = memo
        self.count = count
        self.written: list[int] = []

    def add(self, put: int) -> None:
        """Add the next store (a ``PUT`` index, or :data:`_MEMOIZE`)."""
        if put == _MEMOIZE:
            put = self.count
            self.count += 1
        elif put not in self.memo and put not in self.written:
            self.count += 1
        self.written.append(put)

    def apply(self, values: list[Any]) -> int:
        """Store ``values`` at the added indices; returns the new memo count."""
        for index, value in zip(self.written, values, strict=True):
            self.memo[index] = value
        return self.count


def _count_stores(memo: dict[int, Any], count: int, puts: tuple[bytes, ...]) -> tuple[list[int], int]:
    """The memo indices a sequence of ``PUT``/``MEMOIZE`` stores to, and the memo count after them.

    As the reader counts: ``MEMOIZE`` takes the count as its index, a ``PUT`` to a new index adds one to it.
    """
    written: list[int] = []
    for put in puts:
        if len(put) == 1:
            written.append(count)
            count += 1
        else:
            index = put[1] if len(put) == 2 else _U32(put, 1)[0]
            if index not in memo and index not in written:
                count += 1
            written.append(index)
    return written, count


def _fits(reader: PickleReader, memo: dict[int, Any], new: int) -> bool:
    """Whether ``new`` more memo entries stay under the reader's cap (else the instructions raise the error)."""
    return len(memo) + new <= reader.memo_limit


def read_reconstruct(
    reader: PickleReader, buf: bytes, pos: int, end: int, memo: dict[int, Any], count: int, at: int
) -> tuple[ArraySlot, int, int] | None:
    """Read a protocol 3/4 array whose ``_reconstruct`` reference ended at ``pos``.

    Returns:
        ``(the built array, position after it, new memo count)``, or None to interpret the instructions instead.
    """
    match = RECONSTRUCT.match(buf, pos)
    if match is None:
        return None
    nd, p1, b_get, p_b, p2, p3, ints, tup, p4, dt, fortran, n1, n4 = match.groups()
    ndarray = memo.get(nd[1] if len(nd) == 2 else _U32(nd, 1)[0])
    if type(ndarray) is not Global or ndarray.build is not None or ndarray.name != "ndarray":
        return None
    n = n1[0] if n1 is not None else _U32(n4)[0]
    start = match.end()
    stop = start + n
    tail = RECONSTRUCT_TAIL.match(buf, stop) if stop <= end else None
    if tail is None or len(memo) + 7 > reader.memo_limit:
        return None
    if tup == b"\x86" and len(ints) == 4 and ints[0] == 0x4B and ints[2] == 0x4B:  # two small dims: (50, 10)
        shape: tuple[int, ...] | None = (ints[1], ints[3])
    else:
        shape = _shape(ints, tup[0])
        if shape is None:
            return None
    inline_b = b_get is None
    p5, p6 = tail.groups()
    puts = (p1, p_b, p2, p3, p4, p5, p6) if inline_b else (p1, p2, p3, p4, p5, p6)
    # the memo indices the instructions store to, in order (MEMOIZE takes the count, a new index adds one)
    if puts.count(b"\x94") == len(puts):  # protocol 4: memoized in order
        written: list[int] | range = range(count, count + len(puts))
        count += len(puts)
    elif b"\x94" not in puts:  # protocols 0 to 3: explicit indices, usually distinct
        stores = b"".join(puts)
        k = len(puts)
        if len(stores) == 2 * k:  # all BINPUT
            written = list(stores[1::2])
        elif len(stores) == 5 * k:  # all LONG_BINPUT
            written = list(_LONG_BINPUTS[k](stores))
        else:
            written = [put[1] if len(put) == 2 else _U32(put, 1)[0] for put in puts]
        if len(set(written)) == k:  # distinct: each index not yet in the memo adds one to the count
            count += k - len(memo.keys() & written)
        else:
            count = _count_stores(memo, count, puts)[1]
    else:
        written, count = _count_stores(memo, count, puts)
    # the references it makes must not be to what it stores itself (the instructions would then read those)
    if not inline_b:
        b_index = b_get[1] if len(b_get) == 2 else _U32(b_get, 1)[0]
        if b_index in written or memo.get(b_index) != b"b":
            return None
    dtype_index = dt[1] if len(dt) == 2 else _U32(dt, 1)[0]
    dtype = memo.get(dtype_index)
    if dtype_index in written or type(dtype) is not DtypeSlot or not dtype.built:
        return None
    size = dtype.dtype.itemsize
    for dim in shape:
        size *= dim
    if size != n:
        raise PickleFormatError(
            f"holds an array of shape {shape} and dtype {dtype.dtype.str} ({size} bytes) over {n} bytes of data at "
            f"byte {at}; the sizes must match",
            at,
        )
    reader.charged += n + (553 if inline_b else 512)
    if reader.charged > reader.limit:
        reader._charge(0, at)
    raw = buf[start:stop]
    origin = ("bytes", reader.source.base + start, n)
    if fortran == b"\x88":
        order = "F"
        array = frombuffer(raw, dtype.dtype).reshape(shape, order="F")
    else:
        order = "C"
        array = frombuffer(raw, dtype.dtype).reshape(shape)
    slot = ArraySlot(array, (origin, dtype.dtype, shape, order))
    zero = (0,)
    values = (
        (zero, b"b", (ndarray, zero, b"b"), slot, shape, raw, (1, shape, dtype, order == "F", raw))
        if inline_b
        else (zero, (ndarray, zero, b"b"), slot, shape, raw, (1, shape, dtype, order == "F", raw))
    )
    memo.update(zip(written, values, strict=True))  # in order: a later store to one index wins, as it would
    return slot, tail.end(), count


def read_frombuffer(
    reader: PickleReader, buf: bytes, pos: int, end: int, memo: dict[int, Any], count: int, at: int
) -> tuple[ArraySlot, int, int] | None:
    """Read a protocol 5 array whose ``_frombuffer`` reference ended at ``pos`` (see :func:`read_reconstruct`)."""
    match = FROMBUFFER.match(buf, pos)
    if match is None:
        return None
    g = match.groups()
    n, is_bytearray = _length(g, 0)
    start = match.end()
    tail = FROMBUFFER_TAIL.match(buf, start + n) if start + n <= end else None
    if tail is None or not _fits(reader, memo, 5):
        return None
    t = tail.groups()
    shape = _shape(t[5], t[6][0])
    if shape is None:
        return None
    stores = _Stores(memo, count)
    stores.add(_put(t[0], t[1], t[2]))  # the raw data
    dtype_index = _get(t[3], t[4])
    dtype = memo.get(dtype_index)
    if dtype_index in stores.written or type(dtype) is not DtypeSlot or not dtype.built:
        return None
    stores.add(_put(t[7], t[8], t[9]))  # the shape
    inline_order = t[10] is None and t[11] is None
    if inline_order:
        order = t[12].decode()
        stores.add(_put(t[13], t[14], t[15]))
    else:
        order_index = _get(t[10], t[11])
        order = memo.get(order_index)
        if order_index in stores.written or order not in ("C", "F") or type(order) is not str:
            return None
    stores.add(_put(t[16], t[17], t[18]))  # the arguments
    stores.add(_put(t[19], t[20], t[21]))  # the array
    raw: bytes | bytearray = buf[start : start + n]
    if is_bytearray:
        raw = bytearray(raw)
    reader._charge(n + (321 if inline_order else 280), at)
    origin = ("bytearray" if is_bytearray else "bytes", reader.source.base + start, n)
    try:
        array = make_array(raw, dtype, shape, order)
    except PickleContentError as error:
        raise PickleFormatError(f"holds {error} at byte {at}", at) from None
    slot = ArraySlot(array, (origin, array.dtype, array.shape, order))
    if n > 64:
        reader.payload_origin[id(raw)] = (raw, origin)
    args = (raw, dtype, shape, order)
    values: list[Any] = [raw, shape, *([order] if inline_order else []), args, slot]
    return slot, tail.end(), stores.apply(values)


def read_array_items(
    reader: PickleReader, buf: bytes, pos: int, end: int, memo: dict[int, Any], count: int, stack: list[Any]
) -> tuple[bytes, int, int, int]:
    """Read the ``int key -> array`` items that follow ``pos`` in a batch of a dict's items, pushing them.

    Each item has exactly the effects its instructions have: the key is pushed and charged as ``BININT1``,
    ``BININT2``, ``BININT`` or ``LONG1`` would push and charge it, then the array is read by
    :func:`read_reconstruct` (same checks, charges and memo entries) and pushed. The first item of another form (or
    whose array :func:`read_reconstruct` leaves to the instructions) ends the run, untouched, for the reader's
    instruction loop. Blocks are read on as the items need them.

    Returns:
        ``(block, position, end of block, memo count)`` after the items read.
    """
    source = reader.source
    unpack_i32, unpack_u16, unpack_u32 = _I32, _U16, _U32
    match_item = ITEM.match
    while True:
        if end - pos < _REFILL and source.base + end < source.size:
            buf = source.fill(buf, pos, BLOCK)
            pos, end = 0, len(buf)
        item = match_item(buf, pos)
        if item is None:
            break
        binint, binint1, binint2, long1, get1, get4 = item.groups()
        function = memo.get(get1[0] if get1 is not None else unpack_u32(get4)[0])
        if type(function) is not Global or function.build is not build_empty_array:
            break
        if binint is not None:
            key, charge = unpack_i32(binint)[0], 32
        elif binint1 is not None:
            key, charge = binint1[0], 0
        elif binint2 is not None:
            key, charge = unpack_u16(binint2)[0], 32
        else:
            key, charge = int.from_bytes(long1[1:], "little", signed=True), long1[0] + 40
        get_at = source.base + item.end() - (2 if get1 is not None else 5)
        if charge:
            reader.charged += charge
            if reader.charged > reader.limit:  # the key's instruction refuses it
                reader.charged -= charge
                reader._charge(charge, source.base + item.start(1 if binint else 3 if binint2 else 4) - 1)
        fast = read_reconstruct(reader, buf, item.end(), end, memo, count, get_at)
        if fast is None:
            reader.charged -= charge
            break
        slot, pos, count = fast
        stack.append(key)
        stack.append(slot)
    return buf, pos, end, count
