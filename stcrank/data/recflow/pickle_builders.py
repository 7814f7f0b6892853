"""What the names a RecFlow pickle may refer to build: stcrank's own constructors, never the named objects.

A pickle names globals (``numpy.dtype``, ``numpy._core.multiarray._reconstruct``...) and asks the reader to call
them with arguments and then to apply a state to the result (``REDUCE``, ``BUILD``). Calling numpy's own
reconstruction with attacker-chosen state is how a 109-byte pickle makes numpy read eight bytes of the file as a
pointer (an object dtype rebuilt through ``BUILD``, then ``scalar`` or an array state over raw bytes). So
:mod:`stcrank.data.recflow.pickle_reader` never imports or calls a named global: each allowed name maps to one of
the builders below, which check their arguments against the few forms numpy writes and build the value from
validated parts only:

* ``numpy.dtype(spec, align, copy)`` then ``BUILD (version, endian, None, None, None, -1, -1, 0)``: a
  :class:`DtypeSlot` for a boolean, integer or floating dtype (``b1``, ``i1``-``i8``, ``u1``-``u8``,
  ``f2``-``f8``), rebuilt as ``numpy.dtype(endian + spec)``. Object, structured, sub-array, string, void and
  datetime dtypes, and any state with fields, names, a sub-array, metadata or flags, are refused.
* ``_reconstruct(numpy.ndarray, (0,), b"b")`` then ``BUILD (1, shape, dtype, is_fortran, raw bytes)``, and
  ``_frombuffer(raw bytes, dtype, shape, order)`` (protocol 5): an :class:`ArraySlot` holding
  ``numpy.frombuffer(raw, dtype).reshape(shape)``, where the dtype is a checked :class:`DtypeSlot`, the shape has
  at most :data:`MAX_NDIM` non-negative axes, and the raw bytes are exactly ``prod(shape) * itemsize`` long. No
  strides, offsets or views: an array owns (or shares with its one payload) exactly its bytes.
* ``scalar(dtype, raw bytes)``: the Python value (int, float or bool) of ``itemsize`` raw bytes.
* ``_codecs.encode(text, "latin1")`` (how protocols 0-2 store bytes) and ``bytes()`` (an empty ``bytes``).

Everything else a pickle may name is refused with :class:`~stcrank.data.recflow.pickles.UnsafePickleError`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np

MAX_NDIM = 8
"""Most axes an array of a pickle may have (RecFlow's have two)."""

_DTYPE_SPEC = re.compile(r"(b1|[iu][1248]|f[248])")
_BYTE_ORDERS = frozenset("<>|=")


class PickleContentError(ValueError):
    """A pickle's content is malformed or outside what a RecFlow pickle may hold (the reader adds the file)."""


class PickleCodeError(Exception):
    """A pickle names a global or uses an instruction that could run code (nothing of it was run).

    Attributes:
        module: Module of the refused global, or ``"<opcode>"``.
        name: Name of the refused global, or what the instruction is.
    """

    def __init__(self, module: str, name: str, offset: int) -> None:
        self.module = module
        self.name = name
        self.offset = offset
        super().__init__(f"{module}.{name} at byte {offset}")


class PickleFormatError(Exception):
    """A pickle is truncated, corrupt, over its budget or holds something a RecFlow pickle may not.

    Attributes:
        offset: Byte of the file where it was found.
    """

    def __init__(self, message: str, offset: int) -> None:
        self.offset = offset
        super().__init__(message)


class Global:
    """A name a pickle refers to, with the builder stcrank uses for it (the named object is never imported).

    Attributes:
        module: The module as spelled in the pickle.
        name: The name as spelled in the pickle.
        build: Called with ``REDUCE``'s arguments; None where the name is only an argument (``numpy.ndarray``).
    """

    __slots__ = ("build", "module", "name")

    def __init__(self, module: str, name: str, build: Callable[..., Any] | None) -> None:
        self.module = module
        self.name = name
        self.build = build

    def __repr__(self) -> str:
        return f"{self.module}.{self.name}"


class DtypeSlot:
    """A ``numpy.dtype`` being rebuilt: the spec from ``REDUCE``, the byte order from ``BUILD``.

    Attributes:
        spec: Kind and size, e.g. ``"i8"``.
        dtype: The dtype (native byte order until a state sets another).
        built: Whether a ``BUILD`` state was applied (a second one is refused).
    """

    __slots__ = ("built", "dtype", "spec")

    def __init__(self, spec: str) -> None:
        self.spec = spec
        self.dtype = np.dtype(spec)
        self.built = False

    def __repr__(self) -> str:
        return f"dtype({self.dtype.str!r})"

    def build(self, state: Any) -> None:
        """Apply ``dtype.__setstate__``'s state after checking it holds nothing but a byte order."""
        if self.built:
            raise PickleContentError("a dtype's state is set twice")
        if type(state) is not tuple or len(state) not in (8, 9):
            raise PickleContentError(f"a dtype state of {_describe(state)}; expected numpy's 8- or 9-tuple")
        version, order, subarray, names, fields, elsize, alignment, flags = state[:8]
        metadata = state[8] if len(state) == 9 else None
        if version not in (3, 4) or type(version) is not int:
            raise PickleContentError(f"a dtype state of version {_describe(version)}; expected 3 or 4")
        if type(order) is not str or order not in _BYTE_ORDERS:
            raise PickleContentError(f"a dtype byte order {_describe(order)}; expected one of '<', '>', '|', '='")
        extras = {"sub-array": subarray, "names": names, "fields": fields, "metadata": metadata}
        found = [name for name, value in extras.items() if value is not None]
        if found:
            raise PickleContentError(
                f"a dtype {self.spec!r} with {', '.join(found)} (a structured or object dtype); RecFlow arrays are "
                "plain integer arrays"
            )
        if (elsize, alignment, flags) != (-1, -1, 0) or not all(type(v) is int for v in (elsize, alignment, flags)):
            raise PickleContentError(
                f"a dtype {self.spec!r} with size {_describe(elsize)}, alignment {_describe(alignment)} and flags "
                f"{_describe(flags)}; expected -1, -1 and 0 (a plain numeric dtype)"
            )
        self.dtype = np.dtype(order + self.spec) if order != "|" else np.dtype(self.spec)
        self.built = True


class ArraySlot:
    """An array being rebuilt (``_reconstruct`` gives an empty slot, ``BUILD`` fills it), or a finished one.

    Attributes:
        array: The array, None until filled.
        origin: Where its raw bytes lie in the file (so a reader that released it can read it again), or None.
    """

    __slots__ = ("array", "origin")

    def __init__(self, array: np.ndarray | None = None, origin: Any = None) -> None:
        self.array = array
        self.origin = origin

    def __repr__(self) -> str:
        if self.array is None:
            return "an empty array"
        return f"an array {self.array.dtype.str} {self.array.shape}"

    def build(self, state: Any, raw_origin: Any) -> None:
        """Apply ``ndarray.__setstate__``'s state ``([1,] shape, dtype, is_fortran, raw)`` after checking it."""
        if self.array is not None:
            raise PickleContentError("an array's state is set twice")
        if type(state) is not tuple or len(state) not in (4, 5):
            raise PickleContentError(f"an array state of {_describe(state)}; expected numpy's 5-tuple")
        if len(state) == 5:
            if state[0] != 1 or type(state[0]) is not int:
                raise PickleContentError(f"an array state of version {_describe(state[0])}; expected 1")
            state = state[1:]
        shape, dtype, fortran, raw = state
        if type(fortran) not in (bool, int) or fortran not in (0, 1):
            raise PickleContentError(f"an array order flag {_describe(fortran)}; expected True or False")
        self.array = make_array(raw, dtype, shape, "F" if fortran else "C")
        self.origin = (raw_origin, self.array.dtype, self.array.shape, "F" if fortran else "C")


def make_array(raw: Any, dtype: Any, shape: Any, order: str) -> np.ndarray:
    """``numpy.frombuffer(raw, dtype).reshape(shape, order)`` once the parts are checked to fit exactly.

    Raises:
        PickleContentError: If the dtype is not a checked :class:`DtypeSlot`, the shape is not a tuple of at most
            :data:`MAX_NDIM` non-negative ints, or the raw bytes are not exactly the array's size.
    """
    if type(dtype) is not DtypeSlot:
        raise PickleContentError(f"an array whose dtype is {_describe(dtype)}; expected a numpy dtype")
    if type(shape) is not tuple or len(shape) > MAX_NDIM or not all(type(n) is int and n >= 0 for n in shape):
        raise PickleContentError(
            f"an array of shape {_describe(shape)}; expected a tuple of at most {MAX_NDIM} non-negative ints"
        )
    if type(raw) not in (bytes, bytearray):
        raise PickleContentError(f"an array whose data is {_describe(raw)}; expected raw bytes")
    count = 1
    for n in shape:
        count *= n
    itemsize = dtype.dtype.itemsize
    if count * itemsize != len(raw):
        raise PickleContentError(
            f"an array of shape {shape} and dtype {dtype.dtype.str} ({count * itemsize} bytes) over {len(raw)} bytes "
            "of data; the sizes must match"
        )
    return np.frombuffer(raw, dtype=dtype.dtype).reshape(shape, order=order)


def _build_dtype(*args: Any) -> DtypeSlot:
    if len(args) != 3 or type(args[0]) is not str or not all(type(a) is bool for a in args[1:]):
        raise PickleContentError(f"numpy.dtype called with {_describe(args)}; expected (spec, align, copy)")
    spec = args[0]
    if not _DTYPE_SPEC.fullmatch(spec):
        raise PickleContentError(
            f"a dtype {spec[:20]!r}; RecFlow arrays are integer arrays (boolean, integer and float dtypes are read, "
            "object, structured, string and other dtypes are refused)"
        )
    return DtypeSlot(spec)


def build_empty_array(*args: Any) -> ArraySlot:
    """``_reconstruct(numpy.ndarray, (0,), b'b')``: an empty :class:`ArraySlot` for a ``BUILD`` to fill."""
    if (
        len(args) != 3
        or type(args[0]) is not Global
        or args[0].name != "ndarray"
        or args[1] != (0,)
        or args[2] not in (b"b", "b")
    ):
        raise PickleContentError(
            f"_reconstruct called with {_describe(args)}; expected (numpy.ndarray, (0,), b'b') as numpy writes it"
        )
    return ArraySlot()


def build_from_buffer(*args: Any) -> ArraySlot:
    """``_frombuffer(raw, dtype, shape, order)`` (protocol 5): the array, checked by :func:`make_array`."""
    if len(args) not in (4, 5) or (len(args) == 5 and args[4] is not None):
        raise PickleContentError(f"_frombuffer called with {_describe(args)}; expected (data, dtype, shape, order)")
    raw, dtype, shape, order = args[:4]
    if order not in ("C", "F"):
        raise PickleContentError(f"_frombuffer with order {_describe(order)}; expected 'C' or 'F'")
    return ArraySlot(make_array(raw, dtype, shape, order))


def _build_scalar(*args: Any) -> int | float | bool:
    if len(args) != 2 or type(args[0]) is not DtypeSlot or type(args[1]) is not bytes:
        raise PickleContentError(f"numpy scalar called with {_describe(args)}; expected (dtype, raw bytes)")
    dtype, raw = args[0].dtype, args[1]
    if len(raw) != dtype.itemsize:
        raise PickleContentError(
            f"a numpy scalar of dtype {dtype.str} over {len(raw)} bytes; expected {dtype.itemsize}"
        )
    return np.frombuffer(raw, dtype=dtype)[0].item()


def _build_latin1(*args: Any) -> bytes:
    if len(args) == 1 and type(args[0]) is str:
        args = (args[0], "latin1")
    if len(args) != 2 or type(args[0]) is not str or args[1] not in ("latin1", "latin-1", "iso8859-1"):
        raise PickleContentError(f"_codecs.encode called with {_describe(args)}; only (text, 'latin1') is read")
    try:
        return args[0].encode("latin-1")
    except UnicodeEncodeError as error:
        raise PickleContentError(f"_codecs.encode of text that is not latin-1 ({error})") from None


def _build_empty_bytes(*args: Any) -> bytes:
    if args:
        raise PickleContentError(f"bytes called with {_describe(args)}; only bytes() is read")
    return b""


_NUMPY_CORE = ("numpy.core", "numpy._core")  # numpy 1 and numpy 2 spellings

BUILDERS: dict[tuple[str, str], Callable[..., Any] | None] = {
    ("numpy", "ndarray"): None,
    ("numpy", "dtype"): _build_dtype,
    **{(f"{core}.multiarray", "_reconstruct"): build_empty_array for core in _NUMPY_CORE},
    **{(f"{core}.multiarray", "scalar"): _build_scalar for core in _NUMPY_CORE},
    **{(f"{core}.numeric", "_frombuffer"): build_from_buffer for core in _NUMPY_CORE},
    ("_codecs", "encode"): _build_latin1,
    ("builtins", "bytes"): _build_empty_bytes,
    ("__builtin__", "bytes"): _build_empty_bytes,
}
"""``(module, name)`` a pickle may name -> the builder stcrank calls for it; every other name is refused."""


def _describe(value: Any, depth: int = 0) -> str:
    """A short description of a value for an error message (never the repr of a large or deep structure)."""
    kind = type(value)
    if value is None or kind in (bool, int, float):
        text = repr(value)
        return text if len(text) <= 24 else text[:21] + "..."
    if kind in (str, bytes, bytearray):
        return repr(value[:20]) + ("..." if len(value) > 20 else "")
    if kind in (Global, DtypeSlot, ArraySlot):
        return repr(value)
    if kind is tuple and depth < 1 and len(value) <= 6:
        return "(" + ", ".join(_describe(v, depth + 1) for v in value) + ("," if len(value) == 1 else "") + ")"
    if kind is np.ndarray:
        return f"an array {value.dtype.str} {value.shape}"
    size = f" of {len(value)} items" if hasattr(value, "__len__") else ""
    return f"a {kind.__name__}{size}"


describe = _describe
