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
day's dict of several GB never has to exist in memory to be written (the synthetic release uses it).
"""

from __future__ import annotations

import codecs
import collections
import io
import pickle
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from stcrank.data.recflow.errors import RecFlowFormatError

try:  # numpy >= 2
    from numpy._core import multiarray as _multiarray
    from numpy._core import numeric as _numeric
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core import multiarray as _multiarray
    from numpy.core import numeric as _numeric


class UnsafePickleError(pickle.UnpicklingError):
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


class DictPickleWriter:
    """Write one pickled ``dict`` incrementally, a batch of items at a time, with memory bounded by the batch.

    The file is an ordinary pickle of a dict (protocol 3, so :func:`pickle.load` and :func:`load_pickle` read it):
    ``PROTO 3, EMPTY_DICT``, then per batch ``MARK, key, value, ..., SETITEMS``, then ``STOP``. Protocol 3 is
    used because its memo puts carry explicit indices and it has no frames: each key and value is pickled by one
    :class:`pickle.Pickler` whose memo is cleared at every batch (so nothing of an earlier batch stays referenced),
    and the ``STOP`` that ends each of its dumps is overwritten by the next opcode.

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
        """Append a batch of ``(key, value)`` items (a key written twice keeps its last value, as in a dict)."""
        self._pickler.clear_memo()
        self._file.write(pickle.MARK)
        for key, value in items:
            for obj in (key, value):
                self._pickler.dump(obj)  # PROTO, obj, STOP
                self._file.seek(-1, io.SEEK_CUR)  # the next opcode replaces STOP
            self.items += 1
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
