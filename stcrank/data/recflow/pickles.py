"""A restricted unpickler for the pickles of the RecFlow release.

A pickle can run arbitrary code: unpickling resolves every global it names (``os.system`` through
``__reduce__``, for instance) and calls it. The release's pickles only hold dicts of numpy arrays and plain
scalars, so :func:`load_pickle` resolves only the globals such data needs and refuses every other one with an
:class:`UnsafePickleError` that names the file and the refused global. Never use :func:`pickle.load` on
downloaded data.

Allowed globals:

* containers and scalars: ``dict``, ``list``, ``tuple``, ``set``, ``frozenset``, ``collections.OrderedDict``,
  ``int``, ``float``, ``complex``, ``bool``, ``str``, ``bytes``, ``bytearray``;
* ``_codecs.encode`` restricted to latin-1 (protocol 0-2 pickles store raw bytes as latin-1 text);
* numpy arrays, dtypes and scalars: ``numpy.ndarray``, ``numpy.dtype`` and ``_reconstruct``, ``scalar`` and
  ``_frombuffer`` under both the numpy 1 (``numpy.core``) and numpy 2 (``numpy._core``) module spellings, so
  pickles written by either load under either.

:class:`DictPickleWriter` writes the other way round: one dict pickle, batch of items by batch of items, so that a
day's dict of several GB never has to exist in memory to be written (the synthetic release uses it), and
:func:`iter_dict_pickle` reads one back the same way: the items of a pickled dict in batches, with memory
bounded by a batch, under the same restrictions.
"""

from __future__ import annotations

import codecs
import collections
import contextlib
import io
import logging
import pickle
import queue
import struct
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from stcrank.data.recflow.errors import RecFlowFormatError
from stcrank.errors import StcrankError

try:  # numpy >= 2
    from numpy._core import multiarray as _multiarray
    from numpy._core import numeric as _numeric
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core import multiarray as _multiarray
    from numpy.core import numeric as _numeric

logger = logging.getLogger(__name__)


class UnsafePickleError(StcrankError, pickle.UnpicklingError):
    """A pickle names a global outside the allowed set (it could run code); nothing of it was executed.

    Attributes:
        path: The file (or ``"<bytes>"``).
        module: Module of the refused global.
        name: Name of the refused global.
    """

    def __init__(self, path: str, module: str, name: str) -> None:
        self.path = path
        self.module = module
        self.name = name
        super().__init__(
            f"{path}: refused to unpickle global {module}.{name}: RecFlow pickles may only hold dicts, lists, "
            "tuples, numpy arrays/dtypes and scalars (a pickle that names other globals can run code)"
        )


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    # Protocol 0-2 pickles rebuild bytes as _codecs.encode(text, "latin1"); no other codec is needed.
    if codecs.lookup(encoding).name != "iso8859-1":
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r} is not allowed")
    return codecs.encode(text, "latin1")


_BUILTINS: dict[str, Any] = {
    cls.__name__: cls for cls in (dict, list, tuple, set, frozenset, int, float, complex, bool, str, bytes, bytearray)
}

_NUMPY: dict[str, Any] = {
    "_reconstruct": _multiarray._reconstruct,
    "scalar": _multiarray.scalar,
    "_frombuffer": _numeric._frombuffer,
}

ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    **{("builtins", name): obj for name, obj in _BUILTINS.items()},
    **{("__builtin__", name): obj for name, obj in _BUILTINS.items()},  # Python 2 spelling
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("_codecs", "encode"): _latin1_encode,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): _NUMPY["_reconstruct"],
    ("numpy._core.multiarray", "_reconstruct"): _NUMPY["_reconstruct"],
    ("numpy.core.multiarray", "scalar"): _NUMPY["scalar"],
    ("numpy._core.multiarray", "scalar"): _NUMPY["scalar"],
    ("numpy.core.numeric", "_frombuffer"): _NUMPY["_frombuffer"],
    ("numpy._core.numeric", "_frombuffer"): _NUMPY["_frombuffer"],
}
"""``(module, name)`` -> the object it resolves to; every other global is refused."""


class RestrictedUnpickler(pickle.Unpickler):
    """A :class:`pickle.Unpickler` that resolves only :data:`ALLOWED_GLOBALS`.

    Args:
        file: A binary file object.
        source: The file's name, used in error messages.
    """

    def __init__(self, file: io.BufferedIOBase, source: str) -> None:
        super().__init__(file)
        self.source = source

    def find_class(self, module: str, name: str) -> Callable[..., Any]:
        """Resolve an allowed global; refuse anything else with :class:`UnsafePickleError`."""
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(self.source, module, name) from None

    def persistent_load(self, pid: Any) -> Any:
        """Refuse persistent ids (RecFlow pickles have none)."""
        raise UnsafePickleError(self.source, "<persistent_load>", repr(pid)[:80])


def _load(file: io.BufferedIOBase, source: str) -> Any:
    try:
        return RestrictedUnpickler(file, source).load()
    except UnsafePickleError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as error:
        raise RecFlowFormatError(
            f"{source}: corrupt or truncated pickle ({type(error).__name__}: {error}); expected a complete "
            "pickle of dicts and numpy arrays"
        ) from error


def load_pickle(path: str | Path) -> Any:
    """Load a RecFlow pickle with the restricted unpickler.

    Args:
        path: The ``.pkl`` file.

    Returns:
        The unpickled object.

    Raises:
        UnsafePickleError: If the pickle names a global outside :data:`ALLOWED_GLOBALS`.
        RecFlowFormatError: If the file is missing, truncated or corrupt.
    """
    path = Path(path)
    try:
        with path.open("rb") as file:
            return _load(file, str(path))
    except FileNotFoundError as error:
        raise RecFlowFormatError(f"{path}: file not found") from error


def loads_pickle(data: bytes, source: str = "<bytes>") -> Any:
    """Unpickle bytes with the restricted unpickler (see :func:`load_pickle`).

    Args:
        data: The pickle.
        source: A name for error messages.
    """
    return _load(io.BytesIO(data), source)


DICT_BATCH_ITEMS = 1000
"""Items per batch of a dict pickle (as Python's pickler writes them); also what :func:`iter_dict_pickle` yields."""


class DictPickleWriter:
    """Write one pickled ``dict`` incrementally, a batch of items at a time, with memory bounded by the batch.

    The file is an ordinary pickle of a dict (protocol 3, so :func:`pickle.load` and :func:`load_pickle` read it):
    ``PROTO 3, EMPTY_DICT``, then per batch of at most 1000 items ``MARK, key, value, ..., SETITEMS``, then
    ``STOP``. Protocol 3 is used because its memo puts carry explicit indices and it has no frames: each key and
    value is pickled by one :class:`pickle.Pickler` whose memo is cleared at every batch (so nothing of an earlier
    batch stays referenced), and the ``STOP`` that ends each of its dumps is overwritten by the next opcode.

    Use as a context manager; the file is complete (and only then loadable) once the writer is closed.

    Args:
        path: The ``.pkl`` file to write (parents are created).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("wb")
        self._pickler = pickle.Pickler(self._file, protocol=3)
        self._file.write(pickle.PROTO + b"\x03" + pickle.EMPTY_DICT)
        self.items = 0

    def write(self, items: Iterable[tuple[Any, Any]]) -> None:
        """Append ``(key, value)`` items (a key written twice keeps its last value, as in a dict).

        Items go out in batches of at most :data:`DICT_BATCH_ITEMS` (as Python's pickler writes a dict), each
        pickled with a fresh memo, so that a reader (:func:`iter_dict_pickle`) holds at most one batch at a time.
        """
        batch = 0
        for key, value in items:
            if batch == 0:
                self._pickler.clear_memo()
                self._file.write(pickle.MARK)
            for obj in (key, value):
                self._pickler.dump(obj)  # PROTO, obj, STOP
                self._file.seek(-1, io.SEEK_CUR)  # the next opcode replaces STOP
            self.items += 1
            batch += 1
            if batch == DICT_BATCH_ITEMS:
                self._file.write(pickle.SETITEMS)
                batch = 0
        if batch:
            self._file.write(pickle.SETITEMS)

    def close(self) -> None:
        """Finish the pickle (``STOP``) and close the file."""
        if not self._file.closed:
            self._file.write(pickle.STOP)
            self._file.truncate()
            self._file.close()

    def __enter__(self) -> DictPickleWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


# --- Streaming a pickled dict -------------------------------------------------------------------------------------
#
# Python pickles a dict (protocol 1+) as ``EMPTY_DICT``, a memo put, then batches ``MARK (key value)* SETITEMS`` of
# at most 1000 items, then ``STOP``. The stream reader rewrites the leading ``EMPTY_DICT`` as a persistent id that
# the restricted C unpickler resolves to a sink: ``SETITEMS`` on an object that is not a dict calls its
# ``__setitem__`` item by item, so the items reach the reader one by one while the rest of the file is unpickled,
# with every global still checked by ``find_class``. The unpickler's memo would keep every object it built (each
# array, its bytes), so every few thousand items it is pruned to the small objects later items may refer to
# (numpy's globals, dtypes, short strings): the memo proxy of a helper unpickler that holds only those, at their
# indices, replaces it (the unpickler keeps its own count of memoized objects, so protocol 4's MEMOIZE stays in
# step). A later reference to a pruned object fails cleanly ("memo value not found"); the file is then read again
# without pruning. The unpickler runs in a thread that hands the items over through a bounded queue.

PRUNE_ITEMS = 4096
"""Items between two prunings of the unpickler's memo (bounds the memory the memo holds)."""
_SMALL = 64
"""Memoized strings and bytes up to this size are kept when the memo is pruned; larger ones (array data) are not."""
_DROP_FROM_MEMO = frozenset({np.ndarray, tuple, list, dict, set, frozenset, bytearray, collections.OrderedDict})
_SINK_ID = "stcrank-dict-sink"
_END = object()


class _NeedWholeError(Exception):
    """A pruned memo entry was referenced: the file must be read again without pruning."""


def _keep_in_memo(obj: Any) -> bool:
    """Whether a memoized object is small enough to keep when the memo is pruned (globals, dtypes, short strings)."""
    kind = type(obj)
    if kind is str or kind is bytes:
        return len(obj) <= _SMALL
    return kind not in _DROP_FROM_MEMO


class _SeedUnpickler(pickle.Unpickler):
    """Builds a memo holding given objects at given indices (``PERSID i`` then ``LONG_BINPUT index`` each)."""

    def __init__(self, objects: dict[int, Any]) -> None:
        self.objects = list(objects.values())
        seed = [b"P%d\nr%s0" % (i, struct.pack("<I", index)) for i, index in enumerate(objects)]
        super().__init__(io.BytesIO(b"".join([b"\x80\x02", *seed, b"N."])))
        self.load()

    def persistent_load(self, pid: Any) -> Any:
        """The ``pid``-th object."""
        return self.objects[int(pid)]


class _Sink:
    """The top-level dict's stand-in: receives the items (``SETITEMS`` calls ``__setitem__``), nothing else.

    Its attributes cannot be set once built, so a pickle cannot redirect it (``BUILD`` on it fails).
    """

    __slots__ = ("_stream",)

    def __init__(self, stream: _DictStream) -> None:
        object.__setattr__(self, "_stream", stream)

    def __setattr__(self, name: str, value: Any) -> None:
        raise pickle.UnpicklingError("the top-level dict takes items only")

    def __setitem__(self, key: Any, value: Any) -> None:
        self._stream.receive(key, value)


class _HeaderRewriter(io.RawIOBase):
    """The pickle file with its leading ``EMPTY_DICT`` replaced by ``PERSID <sink>`` (frame length adjusted)."""

    def __init__(self, file: io.BufferedIOBase, head: bytes) -> None:
        super().__init__()
        self.file = file
        self.head = head

    def readable(self) -> bool:
        """Always readable."""
        return True

    def readinto(self, buffer: Any) -> int:
        """Fill ``buffer`` from the rewritten header, then from the file."""
        if self.head:
            n = min(len(buffer), len(self.head))
            buffer[:n] = self.head[:n]
            self.head = self.head[n:]
            return n
        return self.file.readinto(buffer)


def _rewrite_header(file: io.BufferedIOBase) -> bytes | None:
    """Read the header ``[PROTO p] [FRAME n] EMPTY_DICT`` and return its rewrite; None if the file has another one."""
    start = file.read(12)
    pos, out = 0, b""
    if start[:1] == pickle.PROTO and len(start) >= 2:
        out, pos = start[:2], 2
    if start[pos : pos + 1] == b"\x95" and len(start) >= pos + 10:  # FRAME: the dict's opcode is inside it
        (length,) = struct.unpack_from("<Q", start, pos + 1)
        pos += 9
        if start[pos : pos + 1] != pickle.EMPTY_DICT or length < 1:
            return None
        sink = b"P%s\n" % _SINK_ID.encode()
        out += b"\x95" + struct.pack("<Q", length - 1 + len(sink)) + sink
    elif start[pos : pos + 1] == pickle.EMPTY_DICT:
        out += b"P%s\n" % _SINK_ID.encode()
    else:
        return None
    return out + start[pos + 1 :]


class _StreamUnpickler(RestrictedUnpickler):
    """Restricted unpickler whose only persistent id is the sink (the file's own ones are refused)."""

    def __init__(self, file: io.BufferedIOBase, source: str, sink: _Sink) -> None:
        super().__init__(file, source)
        self.sink: _Sink | None = sink

    def persistent_load(self, pid: Any) -> Any:
        """Resolve the sink, once; refuse anything else."""
        if pid == _SINK_ID and self.sink is not None:
            sink, self.sink = self.sink, None
            return sink
        return super().persistent_load(pid)


class _DictStream:
    """Unpickles a dict pickle in a thread, handing over its items in batches through a bounded queue."""

    def __init__(
        self, open_file: Callable[[], Any], source: str, batch_items: int, prune_items: int | None, skip: int
    ) -> None:
        self.open_file = open_file
        self.source = source
        self.batch_items = batch_items
        self.prune_items = prune_items
        self.skip = skip
        self.pending: list[tuple[Any, Any]] = []
        self.since_prune = 0
        self.pruned = False
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=1)
        self.closed = threading.Event()
        self.unpickler: _StreamUnpickler | None = None

    def receive(self, key: Any, value: Any) -> None:
        if self.closed.is_set():
            raise _NeedWholeError  # the reader went away: stop unpickling
        if self.skip:
            self.skip -= 1
        else:
            self.pending.append((key, value))
            if len(self.pending) >= self.batch_items:
                self._put(self.pending)
                self.pending = []
        self.since_prune += 1
        if self.prune_items is not None and self.since_prune >= self.prune_items:
            self._prune()

    def _prune(self) -> None:
        assert self.unpickler is not None
        memo = self.unpickler.memo.copy()
        kept = {index: obj for index, obj in memo.items() if _keep_in_memo(obj)}
        del memo
        self.unpickler.memo = _SeedUnpickler(kept).memo
        self.since_prune = 0
        self.pruned = True

    def _put(self, item: Any) -> None:
        while not self.closed.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue
        raise _NeedWholeError

    def run(self) -> None:
        """Thread body: unpickle the file; the last thing queued is ``_END``, a batch, or an exception."""
        try:
            with self.open_file() as file:
                head = _rewrite_header(file)
                if head is None:
                    self._put(_NeedWholeError("not a plain dict pickle"))
                    return
                sink = _Sink(self)
                self.unpickler = _StreamUnpickler(
                    io.BufferedReader(_HeaderRewriter(file, head), 1 << 20), self.source, sink
                )
                try:
                    result = self.unpickler.load()
                except pickle.UnpicklingError as error:
                    if self.pruned and "memo value not found" in str(error).lower():
                        self._put(_NeedWholeError(str(error)))
                        return
                    raise
                if result is not sink:
                    self._put(
                        RecFlowFormatError(
                            f"{self.source}: the pickle's result is not its top-level dict; expected a dict"
                        )
                    )
                    return
            if self.pending:
                self._put(self.pending)
            self._put(_END)
        except _NeedWholeError:
            return  # the reader closed the stream
        except UnsafePickleError as error:
            self._put_final(error)
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as error:
            self._put_final(
                RecFlowFormatError(
                    f"{self.source}: corrupt or truncated pickle ({type(error).__name__}: {error}); expected a "
                    "complete pickle of a dict"
                )
            )
        except BaseException as error:
            self._put_final(error)
        finally:
            self.unpickler = None

    def _put_final(self, error: BaseException) -> None:
        with contextlib.suppress(_NeedWholeError):  # the reader went away
            self._put(error)

    def __iter__(self) -> Iterator[list[tuple[Any, Any]]]:
        thread = threading.Thread(target=self.run, name=f"unpickle {self.source}", daemon=True)
        thread.start()
        try:
            while True:
                item = self.queue.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self.closed.set()
            thread.join()


_PRUNING: bool | None = None


def _pruning_works() -> bool:
    """Whether pruning the memo mid-load keeps pickles intact here (checked once: it relies on the C unpickler)."""
    global _PRUNING
    if _PRUNING is None:
        expected = {i: np.full((2, 3), i, dtype=np.int64 if i % 2 else np.int32) for i in range(50)}
        _PRUNING = True
        try:
            for protocol in (2, 3, 4, 5):
                data = pickle.dumps(expected, protocol=protocol)
                stream = _DictStream(lambda data=data: io.BytesIO(data), "<self-test>", 7, 5, 0)
                got = [item for batch in stream for item in batch]
                if len(got) != len(expected) or not all(
                    k == i and v.dtype == expected[i].dtype and np.array_equal(v, expected[i])
                    for (k, v), i in zip(got, expected, strict=False)
                ):
                    _PRUNING = False
        except Exception:
            _PRUNING = False
        if not _PRUNING:
            logger.warning("pruning the unpickler's memo does not work here; dict pickles are streamed unpruned")
    return _PRUNING


def iter_dict_pickle(
    path: str | Path, batch_items: int = DICT_BATCH_ITEMS, prune_items: int = PRUNE_ITEMS
) -> Iterator[list[tuple[Any, Any]]]:
    """Yield the ``(key, value)`` items of a pickled dict in batches, without building the dict.

    Memory is bounded by about ``prune_items`` items (plus the small objects the pickle shares across items, such
    as numpy's globals and dtypes), and every object is built by the restricted unpickler of :func:`load_pickle`
    (a pickle that names another global is refused before anything of it runs). Items come in the file's order;
    a key that occurs twice is yielded twice (the dict keeps the later value). Any protocol whose top level is
    ``EMPTY_DICT`` (1 to 5, frames included) is streamed; another pickle (a protocol 0 dict, a dict subclass, not
    a dict) is loaded whole with a log line, and must then be a dict.

    Args:
        path: The ``.pkl`` file.
        batch_items: Items per yielded batch.
        prune_items: Items between two prunings of the unpickler's memo.

    Yields:
        Lists of ``(key, value)`` pairs.

    Raises:
        UnsafePickleError: If the pickle names a global outside :data:`ALLOWED_GLOBALS` (or a persistent id).
        RecFlowFormatError: If the file is missing, truncated or corrupt, or its top level is not a dict.
    """
    path = Path(path)
    if not path.is_file():
        raise RecFlowFormatError(f"{path}: file not found")
    done = 0
    prune: int | None = prune_items if _pruning_works() else None
    while True:
        stream = _DictStream(lambda: path.open("rb"), str(path), batch_items, prune, done)
        try:
            for batch in stream:
                done += len(batch)
                yield batch
            return
        except _NeedWholeError as error:
            if prune is None or "not a plain dict" in str(error):
                break
            logger.info(
                "%s: an item refers to an object of an earlier one (%s); reading it again unpruned", path, error
            )
            prune = None
    logger.info("%s: not a pickle of a plain dict; loading it whole", path)
    whole = load_pickle(path)
    if not isinstance(whole, dict):
        raise RecFlowFormatError(f"{path}: expected a pickled dict at the top level, got {type(whole).__name__}")
    items = list(whole.items())[done:]
    del whole
    for start in range(0, len(items), batch_items):
        yield items[start : start + batch_items]
