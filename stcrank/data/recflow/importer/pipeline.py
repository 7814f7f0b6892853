"""Stages of an import run side by side: an iterator read ahead on its own thread, through a bounded queue.

A day's import has stages that can overlap: decoding the next chunk of ``all_stage`` (pyarrow releases the GIL),
unpickling the next sequences, converting the current chunk, encoding and writing the last one (pyarrow releases
the GIL), hashing the written files. :class:`ReadAhead` runs one iterator (a generator that reads a file) on a
thread of its own and hands its items over in order, producing an item only while fewer than ``depth`` are waiting
or being produced, so memory stays bounded by ``depth`` items besides the consumer's however far it lags, and an
error of the reader is raised to the consumer at the item where it happened, as if it had been read in line.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from stcrank.data.recflow.importer.writing import Clock

T = TypeVar("T")

_END = object()
_POLL_SECONDS = 0.1


class _Failed:
    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


class ReadAhead(Generic[T]):
    """Iterate ``make()`` on a background thread, at most ``depth`` items ahead of the consumer.

    With ``depth=1`` the next item is produced while the consumer works on the current one, and no further.

    The iterator is created, run and closed on the thread (a generator's ``finally`` closes its file there). Use as
    an iterator and close it (or use it as a context manager): closing stops the thread at its next item.

    Args:
        make: Builds the iterator to read ahead.
        depth: Items produced ahead at most (the one being produced included).
        clock: Where the time spent producing items is added (wall and the thread's CPU), under ``phase``.
        phase: The clock's phase for producing items.
        name: The thread's name.
    """

    def __init__(
        self, make: Callable[[], Iterator[T]], depth: int, clock: Clock, phase: str, name: str = "read-ahead"
    ) -> None:
        self._queue: queue.Queue[object] = queue.Queue()
        self._room = threading.Semaphore(max(1, depth))
        self._stop = threading.Event()
        self._done = False
        self._thread = threading.Thread(target=self._produce, args=(make, clock, phase), name=name, daemon=True)
        self._thread.start()

    def _wait_for_room(self) -> bool:
        while not self._stop.is_set():
            if self._room.acquire(timeout=_POLL_SECONDS):
                return True
        return False

    def _produce(self, make: Callable[[], Iterator[T]], clock: Clock, phase: str) -> None:
        iterator: Iterator[T] | None = None
        try:
            with clock(phase):
                iterator = make()
            while self._wait_for_room():
                with clock(phase):
                    item = next(iterator, _END)
                self._queue.put(item)
                if item is _END:
                    return
        except BaseException as error:  # handed to the consumer, raised where the item would have been
            self._queue.put(_Failed(error))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()

    def __iter__(self) -> ReadAhead[T]:
        return self

    def __next__(self) -> T:
        if self._done:
            raise StopIteration
        item = self._queue.get()
        self._room.release()
        if item is _END:
            self._done = True
            raise StopIteration
        if type(item) is _Failed:
            self._done = True
            raise item.error
        return item  # type: ignore[return-value]

    def close(self) -> None:
        """Stop the thread (at its next item) and wait for it; items not taken are dropped."""
        self._done = True
        self._stop.set()
        self._thread.join()

    def __enter__(self) -> ReadAhead[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
