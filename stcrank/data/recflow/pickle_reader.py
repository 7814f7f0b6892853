"""A reader of the pickle format that builds plain data and checked numpy arrays, and never calls what a pickle names.

:func:`pickle.load` runs a small stack machine whose instructions may import any global and call it with any
arguments; restricting the globals (:meth:`pickle.Unpickler.find_class`) still lets a pickle hand attacker-chosen
state to the allowed ones, and numpy's reconstruction then trusts it (an object dtype over raw bytes is read as
pointers: a segmentation fault). It also lets a few bytes allocate gigabytes (``bytearray(3_000_000_000)``, a
memo index of 2**27, an array view of 2**25 rows over 80 bytes).

:class:`PickleReader` interprets the opcodes of protocols 0 to 5 itself (as :mod:`pickletools` documents them) and
builds only ``None``, bools, ints, floats, str, bytes, tuples, lists and dicts, plus what the allowed names build in
:mod:`stcrank.data.recflow.pickle_builders` (checked dtypes and arrays made with :func:`numpy.frombuffer` from raw
bytes of exactly the right size). Persistent ids, extension codes, ``INST``/``OBJ``/``NEWOBJ``, sets and
out-of-band buffers are refused. Memory is bounded three ways:

* **A decoded-size budget.** Every payload (bytes, str), every object the reader creates and every extra reference
  to an array or a payload (a consumer copies it once per reference) is charged to a budget of
  ``16 * file size + 64 MiB``; a pickle that would decode to more is refused before the allocation. A RecFlow
  pickle decodes to about its own size (1.1 to 1.5 times it with Python's object overheads on generated releases).
* **No shared containers.** A memo reference (``GET``) or ``DUP`` of a dict or list, or of a tuple holding
  anything but scalars and strings, is refused, so the decoded objects form a tree whose size is what was
  charged (no "billion laughs" of nested references), and no container changes after it was placed in another.
* **Bounded lengths.** Payload lengths are checked against the bytes left in the file before anything is read;
  numbers, names and text lines have fixed caps; the memo is a dict capped in entries (an index of 2**27 costs one
  entry).

Streaming (:meth:`PickleReader.items`): the top-level dict's items are handed over in batches instead of being
stored, and every ``prune_items`` items the memo drops what later items are unlikely to refer to (arrays, large
payloads, containers). A later reference to a dropped array or payload reads it again from the file (it is
charged again), so memory stays bounded by a batch whatever the file holds.
"""

from __future__ import annotations

import codecs
import struct
from collections.abc import Iterator
from typing import Any

import numpy as np

from stcrank.data.recflow.pickle_arrays import read_array_items, read_frombuffer, read_reconstruct
from stcrank.data.recflow.pickle_builders import (
    BUILDERS,
    ArraySlot,
    DtypeSlot,
    Global,
    PickleCodeError,
    PickleContentError,
    PickleFormatError,
    build_empty_array,
    build_from_buffer,
    describe,
)
from stcrank.data.recflow.pickle_input import LINE, PickleInput, ascii_name, decode_payload, memo_index

BUDGET_FACTOR = 16
"""A pickle may decode to at most this many times its file size, plus :data:`BUDGET_FLOOR`."""
BUDGET_FLOOR = 64 << 20
"""Decoded bytes any pickle may use, whatever its size (64 MiB)."""
MEMO_FLOOR = 1 << 20
"""Memo entries any pickle may hold at once, plus one per 16 bytes of file."""
PRUNE_ITEMS = 4096
"""Top-level items between two prunings of the memo when streaming."""

_MAX_LONG_BYTES = 64  # LONG1/LONG4: ints of up to 512 bits (keys and counts fit in 64)
_SMALL = 64  # payloads up to this size are kept by a pruning and are not charged again when referenced
_SCALARS = (type(None), bool, int, float, str, bytes, Global, DtypeSlot)
_UNCHARGED = frozenset((type(None), bool, int, float, Global, DtypeSlot))  # referred to again at no cost
_ABSENT = object()
_DROPPED_NAMES = 1 << 16  # memo indices of dropped objects remembered to explain a reference to one
_KEYS = (type(None), bool, int, float, str, bytes)  # what the reader lets through as a dict key

# Opcodes (pickletools names)
MARK, STOP, POP, POP_MARK, DUP = b"(.012"
FLOAT, INT, BININT, BININT1, LONG, BININT2, NONE = b"FIJKLMN"
PERSID, BINPERSID, REDUCE, STRING, BINSTRING, SHORT_BINSTRING = b"PQRSTU"
UNICODE, BINUNICODE, APPEND, BUILD, GLOBAL, DICT, EMPTY_DICT, APPENDS = b"VXabcd}e"
GET, BINGET, INST, LONG_BINGET, LIST, EMPTY_LIST, OBJ = b"ghijl]o"
PUT, BINPUT, LONG_BINPUT, SETITEM, TUPLE, EMPTY_TUPLE, SETITEMS, BINFLOAT = b"pqrst)uG"
PROTO, NEWOBJ, EXT1, EXT2, EXT4, TUPLE1, TUPLE2, TUPLE3, NEWTRUE, NEWFALSE, LONG1, LONG4 = range(0x80, 0x8C)
BINBYTES, SHORT_BINBYTES = b"BC"
SHORT_BINUNICODE, BINUNICODE8, BINBYTES8, EMPTY_SET, ADDITEMS, FROZENSET, NEWOBJ_EX = range(0x8C, 0x93)
STACK_GLOBAL, MEMOIZE, FRAME, BYTEARRAY8, NEXT_BUFFER, READONLY_BUFFER = range(0x93, 0x99)

_CODE_OPCODES = {
    PERSID: "a persistent id",
    BINPERSID: "a persistent id",
    INST: "an INST instruction (an instance of a class)",
    OBJ: "an OBJ instruction (an instance of a class)",
    NEWOBJ: "a NEWOBJ instruction (an instance of a class)",
    NEWOBJ_EX: "a NEWOBJ_EX instruction (an instance of a class)",
    EXT1: "an extension code",
    EXT2: "an extension code",
    EXT4: "an extension code",
}
_DATA_OPCODES = {
    EMPTY_SET: "a set",
    ADDITEMS: "a set",
    FROZENSET: "a frozenset",
    NEXT_BUFFER: "an out-of-band buffer",
    READONLY_BUFFER: "an out-of-band buffer",
}


class _Sink:
    """The top-level dict of a streamed pickle: its items are handed over, not stored."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "the top-level dict"


class _Released:
    """An array dropped from the memo by a pruning, and where to read it again in the file."""

    __slots__ = ("dtype", "kind", "length", "offset", "order", "shape")

    def __init__(self, origin: tuple[Any, ...]) -> None:
        (self.kind, self.offset, self.length), self.dtype, self.shape, self.order = origin


def _pop_mark(stack: list[Any], marks: list[int], at: int) -> list[Any]:
    """The objects above the last MARK (removed from the stack, with the mark)."""
    if not marks:
        raise PickleFormatError(f"an instruction at byte {at} needs a MARK and there is none", at)
    k = marks.pop()
    items = stack[k:]
    del stack[k:]
    return items


class PickleReader:
    """Interpret one pickle with a bounded budget (see the module docstring).

    Args:
        source: The pickle's bytes.
        stream: Hand the top-level dict's items over in batches (:meth:`items`) instead of building it.
        batch_items: Items per batch when streaming.
        prune_items: Items between two prunings of the memo when streaming (None: never prune).
    """

    def __init__(
        self, source: PickleInput, stream: bool = False, batch_items: int = 1000, prune_items: int | None = PRUNE_ITEMS
    ) -> None:
        self.source = source
        self.stream = stream
        self.batch_items = max(1, batch_items)
        self.prune_items = prune_items
        self.limit = BUDGET_FACTOR * source.size + BUDGET_FLOOR
        self.memo_limit = MEMO_FLOOR + source.size // 16
        self.charged = 0
        self.result: Any = None
        self.sink = _Sink() if stream else None
        self.payload_origin: dict[int, tuple[Any, tuple[str, int, int]]] = {}
        self.released: dict[int, _Released] = {}  # arrays dropped from the memo by a pruning, by memo index
        self.dropped: set[int] = set()  # other memo indices a pruning dropped (to name them in an error)

    # -- helpers -----------------------------------------------------------------------------------------------

    def _charge(self, n: int, offset: int) -> None:
        self.charged += n
        if self.charged > self.limit:
            raise PickleFormatError(
                f"decodes to more than {self.limit:,} bytes from a file of {self.source.size:,} bytes (refused at "
                f"byte {offset}); a RecFlow pickle decodes to about its own size, this one is out of proportion",
                offset,
            )

    def _shared(self, obj: Any, offset: int) -> Any:
        """An object referenced again (``GET``, ``DUP``): charged, and refused if it is a container."""
        kind = type(obj)
        if kind is ArraySlot:
            if obj.array is not None:
                self._charge(obj.array.nbytes + 112, offset)
            return obj
        if kind in _SCALARS:
            if (kind is str or kind is bytes) and len(obj) > _SMALL:
                self._charge(len(obj), offset)
            return obj
        if kind is bytearray:
            self._charge(len(obj), offset)
            return obj
        if kind is tuple and all(type(v) in _SCALARS for v in obj):
            self._charge(8 * len(obj), offset)
            return obj
        raise PickleFormatError(
            f"refers again to {describe(obj)} at byte {offset}; RecFlow pickles never share a container, and a "
            "shared one could decode to far more than the file holds",
            offset,
        )

    def _missing(self, index: int, offset: int) -> Any:
        """A memo reference to an entry not in the memo: an array released by a pruning (read again), or an error."""
        released = self.released.get(index)
        if released is None:
            if index in self.dropped:
                raise PickleFormatError(
                    f"refers at byte {offset} to an object of an item already handed over (memo entry {index}) that "
                    "cannot be read again; RecFlow pickles share no objects between items but arrays",
                    offset,
                )
            raise PickleFormatError(
                f"refers at byte {offset} to memo entry {index}, which was never stored; the file is corrupt", offset
            )
        self._charge(released.length + 112, offset)
        raw = decode_payload(
            (released.kind, released.offset, released.length),
            self.source.pread(released.offset, released.length),
        )
        array = np.frombuffer(raw, dtype=released.dtype).reshape(released.shape, order=released.order)
        return ArraySlot(
            array, ((released.kind, released.offset, released.length), array.dtype, array.shape, released.order)
        )

    def _prune(self, memo: dict[int, Any]) -> dict[int, Any]:
        """The memo without arrays, large payloads and containers (arrays stay readable again from the file)."""
        kept: dict[int, Any] = {}
        released = self.released
        dropped = self.dropped
        for index, obj in memo.items():
            kind = type(obj)
            if kind in _SCALARS and not ((kind is str or kind is bytes) and len(obj) > _SMALL):
                kept[index] = obj
                released.pop(index, None)
                continue
            if kind is ArraySlot and obj.array is not None and obj.origin is not None and obj.origin[0] is not None:
                released[index] = _Released(obj.origin)
                continue
            # containers, payloads and arrays whose bytes are not in the file as such: a reference is refused
            released.pop(index, None)
            if len(dropped) < _DROPPED_NAMES:
                dropped.add(index)
        self.payload_origin = {}
        return kept

    def _origin_of(self, raw: Any) -> Any:
        entry = self.payload_origin.get(id(raw))
        return entry[1] if entry is not None and entry[0] is raw else None

    # -- the machine ---------------------------------------------------------------------------------------------

    def items(self) -> Iterator[list[tuple[Any, Any]]]:
        """Run the pickle, yielding the top-level dict's items in batches (``stream=True``)."""
        yield from self._run()

    def load(self) -> Any:
        """Run the pickle and return its object (``stream=False``)."""
        for _ in self._run():  # pragma: no cover - nothing is yielded without a sink
            pass
        return self.result

    def _run(self) -> Iterator[list[tuple[Any, Any]]]:
        try:
            yield from self._loop()
        except (IndexError, struct.error):
            raise PickleFormatError(
                f"ends inside an instruction or is corrupt near byte {self.source.base}; expected a complete pickle",
                self.source.base,
            ) from None
        except (MemoryError, OverflowError, RecursionError) as error:
            raise PickleFormatError(
                f"could not be decoded ({type(error).__name__}) near byte {self.source.base}; the file is corrupt",
                self.source.base,
            ) from None

    def _loop(self) -> Iterator[list[tuple[Any, Any]]]:
        source = self.source
        size = source.size
        stack: list[Any] = []
        marks: list[int] = []
        memo: dict[int, Any] = {}
        memo_count = 0
        memo_limit = self.memo_limit
        sink = self.sink
        pending: list[tuple[Any, Any]] = []
        since_prune = 0
        prune_items = self.prune_items if self.stream else None
        batch_items = self.batch_items
        origins = self.payload_origin
        # The opcodes' arguments are read inline, each family in its own branch: this loop runs once per pickle
        # instruction, and a shared reader (a call and a table lookup per instruction) costs 7 to 15% of it.
        unpack_i = struct.Struct("<i").unpack_from
        unpack_u32 = struct.Struct("<I").unpack_from
        unpack_u64 = struct.Struct("<Q").unpack_from
        unpack_u16 = struct.Struct("<H").unpack_from
        unpack_d = struct.Struct(">d").unpack_from
        buf = b""
        pos = end = 0
        started = False

        while True:
            if end - pos < 9:
                buf = self.source.fill(buf, pos, 9)
                pos, end = 0, len(buf)
                if not end:
                    raise PickleFormatError(
                        f"ends at byte {size} without a STOP; the file is truncated, expected a complete pickle",
                        size,
                    )
            at = self.source.base + pos
            op = buf[pos]
            pos += 1
            # the opcodes of an array item come first: they are most of a RecFlow pickle
            if op == 0x94:  # MEMOIZE
                if not stack:
                    raise PickleFormatError(f"MEMOIZE at byte {at} on an empty stack; the file is corrupt", at)
                top = stack[-1]
                if memo_count not in memo and len(memo) >= memo_limit:
                    raise self._memo_full(at, memo_limit)
                memo[memo_count] = top
                memo_count += 1
                continue
            if op == 0x4B:  # BININT1
                stack.append(buf[pos])
                pos += 1
                continue
            if op in (0x68, 0x6A, 0x67):  # BINGET, LONG_BINGET, GET
                if op == 0x68:  # BINGET
                    index = buf[pos]
                    pos += 1
                elif op == 0x6A:  # LONG_BINGET
                    (index,) = unpack_u32(buf, pos)
                    pos += 4
                else:
                    line, buf, pos, end = self._line(buf, pos, at)
                    index = memo_index(line, at)
                obj = memo.get(index, _ABSENT)
                if obj is _ABSENT:
                    stack.append(self._missing(index, at))
                    continue
                if type(obj) is Global and op != 0x67:
                    # numpy's array constructors: read the whole array at once where it has the usual layout
                    fast = None
                    if obj.build is build_empty_array:
                        fast = read_reconstruct(self, buf, pos, end, memo, memo_count, at)
                    elif obj.build is build_from_buffer:
                        fast = read_frombuffer(self, buf, pos, end, memo, memo_count, at)
                    if fast is not None:
                        slot, pos, memo_count = fast
                        stack.append(slot)
                        if sink is not None and marks == [1] and stack[0] is sink and len(stack) % 2:
                            buf, pos, end, memo_count = read_array_items(self, buf, pos, end, memo, memo_count, stack)
                        continue
                kind = type(obj)
                if kind in _UNCHARGED or ((kind is str or kind is bytes) and len(obj) <= _SMALL):
                    stack.append(obj)
                elif obj is sink:
                    raise PickleFormatError(f"refers to the top-level dict inside itself at byte {at}", at)
                else:
                    stack.append(self._shared(obj, at))
                continue
            if op in (0x71, 0x72, 0x70):  # BINPUT, LONG_BINPUT, PUT
                if op == 0x71:  # BINPUT
                    index = buf[pos]
                    pos += 1
                elif op == 0x72:  # LONG_BINPUT
                    (index,) = unpack_u32(buf, pos)
                    pos += 4
                else:
                    line, buf, pos, end = self._line(buf, pos, at)
                    index = memo_index(line, at)
                    if index < 0:
                        raise PickleFormatError(f"a negative memo index at byte {at}; the file is corrupt", at)
                if not stack:
                    raise PickleFormatError(f"PUT at byte {at} on an empty stack; the file is corrupt", at)
                if index not in memo:
                    if len(memo) >= memo_limit:
                        raise self._memo_full(at, memo_limit)
                    memo_count += 1
                memo[index] = stack[-1]
                continue
            if op in (0x85, 0x86, 0x87):  # TUPLE1, TUPLE2, TUPLE3
                n = op - TUPLE1 + 1
                if len(stack) < n:
                    raise PickleFormatError(f"a TUPLE{n} at byte {at} with fewer than {n} objects on the stack", at)
                if marks and marks[-1] > len(stack) - n:
                    raise PickleFormatError(f"a TUPLE{n} at byte {at} reaches over a MARK; the file is corrupt", at)
                values = stack[-n:]
                del stack[-n:]
                for i, v in enumerate(values):
                    if type(v) is ArraySlot:
                        values[i] = self._array_of(v, at)
                self.charged += 40 + 8 * n
                if self.charged > self.limit:
                    self._charge(0, at)
                stack.append(tuple(values))
                continue
            if op == 0x28:  # MARK
                marks.append(len(stack))
                if sink is not None and len(stack) == 1 and stack[0] is sink:  # a batch of the top-level dict's items
                    buf, pos, end, memo_count = read_array_items(self, buf, pos, end, memo, memo_count, stack)
                continue
            if op in (0x42, 0x43, 0x8E, 0x96):  # BINBYTES, SHORT_BINBYTES, BINBYTES8, BYTEARRAY8
                if op == 0x43:  # SHORT_BINBYTES
                    n = buf[pos]
                    pos += 1
                elif op == 0x42:  # BINBYTES
                    (n,) = unpack_u32(buf, pos)
                    pos += 4
                else:
                    (n,) = unpack_u64(buf, pos)
                    pos += 8
                start = self.source.base + pos
                payload, buf, pos, end = self._payload(buf, pos, end, n, at)
                if op == 0x96:  # BYTEARRAY8
                    payload = bytearray(payload)
                if n > _SMALL:
                    origins[id(payload)] = (payload, ("bytearray" if op == 0x96 else "bytes", start, n))
                stack.append(payload)
                continue
            if op == 0x52:  # REDUCE
                if len(stack) < 2 or (marks and marks[-1] > len(stack) - 2):
                    raise PickleFormatError(f"a REDUCE at byte {at} without a callable and its arguments", at)
                args = stack.pop()
                func = stack[-1]
                stack[-1] = self._reduce(func, args, at)
                continue
            if op == 0x62:  # BUILD
                if len(stack) < 2 or (marks and marks[-1] > len(stack) - 2):
                    raise PickleFormatError(f"a BUILD at byte {at} without an object and its state", at)
                state = stack.pop()
                target = stack[-1]
                try:
                    if type(target) is ArraySlot:
                        raw = state[-1] if type(state) is tuple and state else None
                        target.build(state, self._origin_of(raw))
                        self._charge(112, at)
                    elif type(target) is DtypeSlot:
                        target.build(state)
                    else:
                        raise PickleContentError(
                            f"a state for {describe(target)}; only numpy dtypes and arrays take a state"
                        )
                except PickleContentError as error:
                    raise PickleFormatError(f"holds {error} at byte {at}", at) from None
                if sink is not None and marks == [1] and stack[0] is sink and len(stack) % 2:  # an item ended
                    buf, pos, end, memo_count = read_array_items(self, buf, pos, end, memo, memo_count, stack)
                continue
            if op == 0x74:  # TUPLE
                values = _pop_mark(stack, marks, at)
                for i, v in enumerate(values):
                    if type(v) is ArraySlot:
                        values[i] = self._array_of(v, at)
                self._charge(40 + 8 * len(values), at)
                stack.append(tuple(values))
                continue
            if op == 0x89:  # NEWFALSE
                stack.append(False)
                continue
            if op == 0x88:  # NEWTRUE
                stack.append(True)
                continue
            if op == 0x4E:  # NONE
                stack.append(None)
                continue
            if op == 0x29:  # EMPTY_TUPLE
                stack.append(())
                continue
            if op == 0x4A:  # BININT
                stack.append(unpack_i(buf, pos)[0])
                pos += 4
                self.charged += 32
                if self.charged > self.limit:
                    self._charge(0, at)
                continue
            if op == 0x4D:  # BININT2
                stack.append(unpack_u16(buf, pos)[0])
                pos += 2
                self.charged += 32
                if self.charged > self.limit:
                    self._charge(0, at)
                continue
            if op in (0x8C, 0x58, 0x8D):  # SHORT_BINUNICODE, BINUNICODE, BINUNICODE8
                if op == 0x8C:  # SHORT_BINUNICODE
                    n = buf[pos]
                    pos += 1
                elif op == 0x58:  # BINUNICODE
                    (n,) = unpack_u32(buf, pos)
                    pos += 4
                else:
                    (n,) = unpack_u64(buf, pos)
                    pos += 8
                start = self.source.base + pos
                payload, buf, pos, end = self._payload(buf, pos, end, n, at)
                try:
                    text = payload.decode("utf-8", "surrogatepass")
                except UnicodeDecodeError:
                    raise PickleFormatError(
                        f"holds text that is not UTF-8 at byte {at}; the file is corrupt", at
                    ) from None
                if n > _SMALL:
                    origins[id(text)] = (text, ("utf8", start, n))
                stack.append(text)
                continue
            if op in (0x75, 0x73):  # SETITEMS, SETITEM
                if op == 0x75:  # SETITEMS
                    values = _pop_mark(stack, marks, at)
                    if len(values) % 2:
                        raise PickleFormatError(f"a SETITEMS at byte {at} with an odd number of objects", at)
                else:
                    if len(stack) < 3 or (marks and marks[-1] > len(stack) - 3):
                        raise PickleFormatError(f"a SETITEM at byte {at} without a dict, a key and a value", at)
                    values = stack[-2:]
                    del stack[-2:]
                if not stack:
                    raise PickleFormatError(f"a SETITEM(S) at byte {at} without a dict to set the items of", at)
                target = stack[-1]
                for i in range(1, len(values), 2):
                    if type(values[i]) is ArraySlot:
                        values[i] = self._array_of(values[i], at)
                if target is sink:
                    n = len(values) // 2
                    self._charge(72 * n, at)
                    for i in range(0, len(values), 2):
                        key = values[i]
                        if type(key) not in _KEYS:
                            raise PickleFormatError(f"a key that is {describe(key)} at byte {at}", at)
                        pending.append((key, values[i + 1]))
                    since_prune += n
                    while len(pending) >= batch_items:
                        batch = pending[:batch_items]
                        del pending[:batch_items]
                        yield batch
                    if prune_items is not None and since_prune >= prune_items:
                        memo = self._prune(memo)
                        origins = self.payload_origin
                        since_prune = 0
                elif type(target) is dict:
                    self._charge(24 * len(values), at)
                    for i in range(0, len(values), 2):
                        key = values[i]
                        if type(key) not in _KEYS:
                            raise PickleFormatError(f"a key that is {describe(key)} at byte {at}", at)
                        target[key] = values[i + 1]
                else:
                    raise PickleFormatError(f"sets items of {describe(target)} at byte {at}; only a dict has items", at)
                continue
            if op in (0x7D, 0x64):  # EMPTY_DICT, DICT
                if op == 0x64:  # DICT
                    values = _pop_mark(stack, marks, at)
                    if len(values) % 2:
                        raise PickleFormatError(f"a DICT at byte {at} with an odd number of objects", at)
                else:
                    values = []
                if sink is not None and not started and not stack and not marks:
                    if values:
                        pending.extend(zip(values[::2], values[1::2], strict=True))
                    stack.append(sink)
                    started = True
                    continue
                self._charge(64 + 24 * len(values), at)
                new: dict[Any, Any] = {}
                for i in range(0, len(values), 2):
                    key, value = values[i], values[i + 1]
                    if type(key) not in _KEYS:
                        raise PickleFormatError(f"a key that is {describe(key)} at byte {at}", at)
                    new[key] = self._array_of(value, at) if type(value) is ArraySlot else value
                stack.append(new)
                started = True
                continue
            if op in (0x5D, 0x6C):  # EMPTY_LIST, LIST
                values = _pop_mark(stack, marks, at) if op == 0x6C else []
                self._charge(56 + 8 * len(values), at)
                for i, v in enumerate(values):
                    if type(v) is ArraySlot:
                        values[i] = self._array_of(v, at)
                stack.append(values)
                started = True
                continue
            if op in (0x61, 0x65):  # APPEND, APPENDS
                if op == 0x61:  # APPEND
                    if len(stack) < 2 or (marks and marks[-1] > len(stack) - 2):
                        raise PickleFormatError(f"an APPEND at byte {at} without a list and a value", at)
                    values = [stack.pop()]
                else:
                    values = _pop_mark(stack, marks, at)
                if not stack:
                    raise PickleFormatError(f"an APPENDS at byte {at} without a list to append to", at)
                target = stack[-1]
                if type(target) is not list:
                    raise PickleFormatError(f"appends to {describe(target)} at byte {at}; only a list takes items", at)
                self._charge(8 * len(values), at)
                for i, v in enumerate(values):
                    if type(v) is ArraySlot:
                        values[i] = self._array_of(v, at)
                target.extend(values)
                continue
            if op in (0x63, 0x93):  # GLOBAL, STACK_GLOBAL
                if op == 0x63:  # GLOBAL
                    module, buf, pos, end = self._line(buf, pos, at)
                    name, buf, pos, end = self._line(buf, pos, at)
                    module, name = ascii_name(module, at), ascii_name(name, at)
                else:
                    if len(stack) < 2 or (marks and marks[-1] > len(stack) - 2):
                        raise PickleFormatError(f"a STACK_GLOBAL at byte {at} without a module and a name", at)
                    name = stack.pop()
                    module = stack.pop()
                    if type(module) is not str or type(name) is not str:
                        raise PickleFormatError(f"a STACK_GLOBAL at byte {at} whose names are not str", at)
                if (module, name) not in BUILDERS:
                    raise PickleCodeError(module[:100], name[:100], at)
                self._charge(64, at)
                stack.append(Global(module, name, BUILDERS[(module, name)]))
                continue
            if op == 0x95:  # FRAME
                pos += 8  # frames only tell how much to read at once; this reader reads blocks anyway
                continue
            if op == 0x80:  # PROTO
                if buf[pos] > 5:
                    raise PickleFormatError(f"pickle protocol {buf[pos]} at byte {at}; protocols 0 to 5 are read", at)
                pos += 1
                continue
            if op == 0x2E:  # STOP
                if len(stack) != 1 or marks:
                    raise PickleFormatError(
                        f"STOP at byte {at} with {len(stack)} objects on the stack; the file is corrupt", at
                    )
                result = stack[0]
                rest = end - pos
                if rest or source.read(1):
                    raise PickleFormatError(
                        f"has {size - at - 1:,} more bytes after the pickle's end (byte {at}); expected one pickle",
                        at,
                    )
                if sink is not None:
                    if result is not sink:
                        raise PickleFormatError(
                            f"holds {describe(self._array_of(result, at) if type(result) is ArraySlot else result)} "
                            "at the top level; expected a dict",
                            0,
                        )
                    if pending:
                        yield pending
                    return
                self.result = self._array_of(result, at) if type(result) is ArraySlot else result
                return
            if op == 0x30:  # POP
                if marks and marks[-1] == len(stack):
                    marks.pop()  # as pickle.py: a POP right after a MARK pops the mark
                elif stack:
                    stack.pop()
                else:
                    raise PickleFormatError(f"POP at byte {at} on an empty stack", at)
                continue
            if op == 0x31:  # POP_MARK
                _pop_mark(stack, marks, at)
                continue
            if op == 0x32:  # DUP
                if not stack:
                    raise PickleFormatError(f"DUP at byte {at} on an empty stack", at)
                top = stack[-1]
                if top is sink:
                    raise PickleFormatError(f"DUP of the top-level dict at byte {at}", at)
                stack.append(self._shared(top, at))
                continue
            if op == 0x47:  # BINFLOAT
                stack.append(unpack_d(buf, pos)[0])
                pos += 8
                self.charged += 24
                if self.charged > self.limit:
                    self._charge(0, at)
                continue
            if op in (0x8A, 0x8B):  # LONG1, LONG4
                if op == 0x8A:  # LONG1
                    n = buf[pos]
                    pos += 1
                else:
                    (n,) = unpack_i(buf, pos)
                    pos += 4
                if n < 0 or n > _MAX_LONG_BYTES:
                    raise PickleFormatError(
                        f"an integer of {n} bytes at byte {at}; RecFlow pickles hold integers of at most 64 bits", at
                    )
                payload, buf, pos, end = self._payload(buf, pos, end, n, at)
                stack.append(int.from_bytes(payload, "little", signed=True))
                continue
            if op in (0x54, 0x55):  # BINSTRING, SHORT_BINSTRING
                if op == 0x55:  # SHORT_BINSTRING
                    n = buf[pos]
                    pos += 1
                else:
                    (n,) = unpack_i(buf, pos)
                    pos += 4
                    if n < 0:
                        raise PickleFormatError(f"a negative string length at byte {at}; the file is corrupt", at)
                payload, buf, pos, end = self._payload(buf, pos, end, n, at)
                stack.append(payload)  # a Python 2 str: its bytes
                continue
            if op in (0x49, 0x4C, 0x46, 0x53, 0x56):  # INT, LONG, FLOAT, STRING, UNICODE
                line, buf, pos, end = self._line(buf, pos, at, long=op in (0x53, 0x56))
                stack.append(self._text_value(op, line, at))
                continue
            if op in _CODE_OPCODES:
                raise PickleCodeError("<opcode>", _CODE_OPCODES[op], at)
            if op in _DATA_OPCODES:
                raise PickleFormatError(
                    f"holds {_DATA_OPCODES[op]} at byte {at}; RecFlow pickles hold dicts, ints and integer arrays", at
                )
            raise PickleFormatError(f"has an unknown opcode 0x{op:02x} at byte {at}; the file is corrupt", at)

    def _payload(self, buf: bytes, pos: int, end: int, n: int, at: int) -> tuple[bytes, bytes, int, int]:
        """``n`` bytes at ``pos``: checked against the file's size, then charged, then read."""
        self.source.check_length(n, pos, at)
        self._charge(n + 40, at)
        return self.source.payload(buf, pos, end, n, at)

    def _line(self, buf: bytes, pos: int, at: int, long: bool = False) -> tuple[bytes, bytes, int, int]:
        """A text argument (a protocol 0 string may take what is left of the budget, other arguments 256 bytes)."""
        line, buf, pos, end = self.source.line(buf, pos, at, self.limit - self.charged if long else LINE)
        if long:
            self._charge(len(line) + 40, at)
        return line, buf, pos, end

    def _text_value(self, op: int, line: bytes, at: int) -> Any:
        try:
            if op == INT:
                if line == b"00":
                    return False
                if line == b"01":
                    return True
                self.charged += 32
                return int(line)
            if op == LONG:
                self.charged += 32
                return int(line[:-1] if line.endswith(b"L") else line)
            if op == FLOAT:
                self.charged += 24
                return float(line)
            if op == UNICODE:
                return str(line, "raw-unicode-escape")
            # STRING: a quoted Python 2 str
            if len(line) < 2 or line[:1] != line[-1:] or line[:1] not in b"'\"":
                raise ValueError("not a quoted string")
            return codecs.escape_decode(line[1:-1])[0]
        except (ValueError, UnicodeDecodeError) as error:
            raise PickleFormatError(
                f"a malformed text argument at byte {at} ({error}); the file is corrupt", at
            ) from None

    # -- objects -------------------------------------------------------------------------------------------------

    def _memo_full(self, at: int, limit: int) -> PickleFormatError:
        return PickleFormatError(
            f"stores more than {limit:,} memo entries at once (byte {at}) for a file of {self.source.size:,} bytes; "
            "a RecFlow pickle needs a few per item",
            at,
        )

    @staticmethod
    def _array_of(slot: ArraySlot, at: int) -> np.ndarray:
        if slot.array is None:
            raise PickleFormatError(f"holds an array without its data (no state) at byte {at}", at)
        return slot.array

    def _reduce(self, func: Any, args: Any, at: int) -> Any:
        if type(func) is not Global or func.build is None:
            raise PickleFormatError(f"calls {describe(func)} at byte {at}; only numpy's constructors are called", at)
        if type(args) is not tuple:
            raise PickleFormatError(f"calls {func!r} with {describe(args)} at byte {at}; expected a tuple", at)
        try:
            result = func.build(*args)
        except PickleContentError as error:
            raise PickleFormatError(f"holds {error} at byte {at}", at) from None
        if type(result) is ArraySlot:
            self._charge(112, at)
            if result.array is not None:  # _frombuffer: the array is made, remember where its bytes lie
                result.origin = (self._origin_of(args[0]), result.array.dtype, result.array.shape, args[3])
        elif type(result) is bytes and len(result) > _SMALL and args:
            text_origin = self._origin_of(args[0])
            if text_origin is not None and text_origin[0] == "utf8":
                self.payload_origin[id(result)] = (result, ("latin1", text_origin[1], text_origin[2]))
            self._charge(len(result) + 40, at)
        else:
            self._charge(64, at)
        return result
