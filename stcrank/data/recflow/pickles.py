"""Reading the pickles of the RecFlow release safely, and writing dict pickles in bounded memory.

A pickle is a program: :func:`pickle.load` imports whatever globals it names and calls them, and even a
restricted :meth:`pickle.Unpickler.find_class` lets it hand numpy attacker-chosen state (an object dtype over raw
bytes crashes the process) or allocate gigabytes from a few bytes. So the release's pickles are never given to
:mod:`pickle`: :func:`load_pickle`, :func:`loads_pickle` and :func:`iter_dict_pickle` run them through
:class:`~stcrank.data.recflow.pickle_reader.PickleReader`, which interprets the opcodes itself, builds only plain
data (dicts, lists, tuples, ints, floats, str, bytes) and numpy arrays of plain numeric dtypes rebuilt from raw
bytes of exactly their size, resolves only the names numpy uses to pickle arrays, dtypes and scalars (both the
``numpy.core`` and ``numpy._core`` spellings; :data:`ALLOWED_GLOBALS`) to stcrank's own builders, and refuses a
pickle that would decode to far more than its file holds. Every refusal is a
:class:`~stcrank.data.recflow.errors.RecFlowFormatError` naming the file, the byte and what was found; a pickle
that names another global (it could run code) gets :class:`UnsafePickleError`, before anything of it runs.
``docs/data_formats.md`` states the trust model.

:class:`DictPickleWriter` writes the other way round: one dict pickle, batch of items by batch of items, so that a
day's dict of several GB never has to exist in memory to be written (the synthetic release uses it), and
:func:`iter_dict_pickle` reads one back the same way: the items of a pickled dict in batches, with memory
bounded by a batch.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

from stcrank.data.recflow.errors import RecFlowFormatError
from stcrank.data.recflow.pickle_builders import BUILDERS
from stcrank.data.recflow.pickle_input import PickleInput
from stcrank.data.recflow.pickle_reader import (
    PRUNE_ITEMS,
    PickleCodeError,
    PickleFormatError,
    PickleReader,
)

ALLOWED_GLOBALS: frozenset[tuple[str, str]] = frozenset(BUILDERS)
"""``(module, name)`` pairs a pickle may name (numpy's array, dtype and scalar constructors, ``_codecs.encode``
and ``bytes``); each resolves to a builder of stcrank's that checks its arguments, never to the named object."""


class UnsafePickleError(RecFlowFormatError, pickle.UnpicklingError):
    """A pickle names a global outside the allowed set, or an instruction that builds arbitrary objects.

    Nothing of the pickle was executed.

    Attributes:
        path: The file (or ``"<bytes>"``).
        module: Module of the refused global (``"<opcode>"`` for an instruction).
        name: Name of the refused global, or what the instruction does.
        offset: The byte of the file where it was found, if known.
    """

    def __init__(self, path: str, module: str, name: str, offset: int | None = None) -> None:
        self.path = path
        self.module = module
        self.name = name
        self.offset = offset
        where = f" at byte {offset}" if offset is not None else ""
        super().__init__(
            f"{path}: refused to unpickle {module}.{name}{where}: RecFlow pickles may only hold dicts, ints and numpy "
            "arrays (a pickle that names other globals can run code); nothing of it was run"
        )


def _reader(source: PickleInput, stream: bool, batch_items: int = 1000, prune_items: int | None = PRUNE_ITEMS) -> Any:
    return PickleReader(source, stream=stream, batch_items=batch_items, prune_items=prune_items)


def _translate(error: Exception, name: str) -> Exception:
    if isinstance(error, PickleCodeError):
        return UnsafePickleError(name, error.module, error.name, error.offset)
    return RecFlowFormatError(f"{name}: {error}")


def _open(path: Path) -> PickleInput:
    try:
        return PickleInput(path=path)
    except FileNotFoundError as error:
        raise RecFlowFormatError(f"{path}: file not found") from error
    except OSError as error:
        raise RecFlowFormatError(f"{path}: cannot be read ({error})") from error


def load_pickle(path: str | Path) -> Any:
    """Read a RecFlow pickle whole with the safe reader.

    Args:
        path: The ``.pkl`` file.

    Returns:
        The object (dicts, lists, tuples, scalars, str, bytes and numpy arrays only).

    Raises:
        UnsafePickleError: If the pickle names a global outside :data:`ALLOWED_GLOBALS`.
        RecFlowFormatError: If the file is missing, truncated, corrupt, holds something else than plain data
            and numeric arrays, or decodes to far more than its size.
    """
    path = Path(path)
    source = _open(path)
    try:
        return _reader(source, stream=False).load()
    except (PickleCodeError, PickleFormatError) as error:
        raise _translate(error, str(path)) from None
    except OSError as error:
        raise RecFlowFormatError(f"{path}: cannot be read ({error})") from error
    finally:
        source.close()


def loads_pickle(data: bytes, source: str = "<bytes>") -> Any:
    """Read a pickle held in memory with the safe reader (see :func:`load_pickle`).

    Args:
        data: The pickle.
        source: A name for error messages.
    """
    try:
        return _reader(PickleInput(data=bytes(data)), stream=False).load()
    except (PickleCodeError, PickleFormatError) as error:
        raise _translate(error, source) from None


DICT_BATCH_ITEMS = 1000
"""Items per batch of a dict pickle (as Python's pickler writes them); also what :func:`iter_dict_pickle` yields."""


NUMPY1_GLOBALS: tuple[tuple[str, str], ...] = (("numpy.core.multiarray", "_reconstruct"),)
"""The numpy global of an array pickle whose numpy 2 module (``numpy._core``) differs from the numpy 1.x one the
release's pickles name (``numpy.dtype`` and ``numpy.ndarray`` are the same in both)."""


def _numpy1_preamble() -> tuple[bytes, dict[int, tuple[int, Any]]]:
    """Pickle bytes that memoise each of :data:`NUMPY1_GLOBALS` under its numpy 1.x name, and the matching memo.

    ``GLOBAL module name; BINPUT i; POP`` for each: the stack is left as it was, and a pickler given the memo writes
    ``BINGET i`` wherever it would write the global, so the file names ``numpy.core.multiarray._reconstruct``
    (not numpy 2's ``numpy._core.multiarray._reconstruct``) with the fast C pickler.
    """
    from numpy._core import multiarray

    code, memo = b"", {}
    for index, (module, name) in enumerate(NUMPY1_GLOBALS):
        code += pickle.GLOBAL + f"{module}\n{name}\n".encode() + pickle.BINPUT + bytes([index]) + pickle.POP
        obj = getattr(multiarray, name)
        memo[id(obj)] = (index, obj)
    return code, memo


class DictPickleWriter:
    """Write one pickled ``dict`` incrementally, a batch of items at a time, with memory bounded by the batch.

    The file is an ordinary pickle of a dict (protocol 3, so :func:`pickle.load` and :func:`load_pickle` read it):
    ``PROTO 3, EMPTY_DICT``, then per batch of at most 1000 items ``MARK, key, value, ..., SETITEMS``, then
    ``STOP``. Protocol 3 is used because its memo puts carry explicit indices and it has no frames: each key and
    value is pickled by one :class:`pickle.Pickler` whose memo is cleared at every batch (so nothing of an earlier
    batch stays referenced), and the ``STOP`` that ends each of its dumps is overwritten by the next opcode.

    numpy's globals are written under their numpy 1.x names (``numpy.core.multiarray._reconstruct``,
    ``numpy.dtype``, ``numpy.ndarray``), as in the real release, whichever numpy writes them.

    Use as a context manager; the file is complete (and only then loadable) once the writer is closed.

    Args:
        path: The ``.pkl`` file to write (parents are created).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("wb")
        self._pickler = pickle.Pickler(self._file, protocol=3)
        self._preamble, self._memo = _numpy1_preamble()
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
                # A fresh memo per batch, seeded with numpy's globals under their numpy 1.x names.
                self._file.write(self._preamble)
                self._pickler.memo = dict(self._memo)
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


def iter_dict_pickle(
    path: str | Path, batch_items: int = DICT_BATCH_ITEMS, prune_items: int = PRUNE_ITEMS
) -> Iterator[list[tuple[Any, Any]]]:
    """Yield the ``(key, value)`` items of a pickled dict in batches, without building the dict.

    The top-level dict's items are handed over as the safe reader meets them, and every ``prune_items`` items its
    memo releases the arrays and payloads already handed over (a later reference to one reads it again from the
    file), so memory is bounded by about a batch plus ``prune_items`` items' small objects. Items come in the
    file's order; a key that occurs twice is yielded twice (a dict keeps the later value). Every protocol (0 to 5)
    is read this way.

    Args:
        path: The ``.pkl`` file.
        batch_items: Items per yielded batch.
        prune_items: Items between two prunings of the memo.

    Yields:
        Lists of ``(key, value)`` pairs.

    Raises:
        UnsafePickleError: If the pickle names a global outside :data:`ALLOWED_GLOBALS` (or builds objects).
        RecFlowFormatError: If the file is missing, truncated or corrupt, its top level is not a dict, or it
            holds something a RecFlow pickle may not (see :func:`load_pickle`).
    """
    path = Path(path)
    source = _open(path)
    try:
        yield from _reader(source, stream=True, batch_items=batch_items, prune_items=prune_items).items()
    except (PickleCodeError, PickleFormatError) as error:
        raise _translate(error, str(path)) from None
    except OSError as error:
        raise RecFlowFormatError(f"{path}: cannot be read ({error})") from error
    finally:
        source.close()
