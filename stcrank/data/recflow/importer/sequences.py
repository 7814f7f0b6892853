"""The behaviour sequences of ``seq_effective_50_dict``, joined to a day's requests (streamed or spilled)."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from stcrank.data.recflow.domains import SEQ_DOMAINS
from stcrank.data.recflow.importer.pipeline import ReadAhead
from stcrank.data.recflow.importer.rows import Accumulator
from stcrank.data.recflow.importer.sequence_worker import worker_batches
from stcrank.data.recflow.importer.writing import Clock
from stcrank.data.recflow.pickle_contents import sequence_batches
from stcrank.data.recflow.schema import ITEM_ID_COLUMNS, SEQ_ARRAY_COLUMNS, SEQ_LEN
from stcrank.io import writing

logger = logging.getLogger(__name__)

SEQ_BATCH_ITEMS = 1024
"""Pickle items (sequences, or requests of the UBM dict) stacked at a time (4 MB of sequences)."""
SPILL = "the spilled behaviour sequences"
"""How a full-disk error names the spill file of sequences out of request order."""
WORKER_MIN_BYTES = 32 << 20
"""Sequence pickles of at least this size (about 8,000 requests) are unpickled by a worker process."""


def last_of_each_key(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct keys and, for each, the position of its last occurrence (a dict keeps the later value)."""
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    last = np.r_[ordered[1:] != ordered[:-1], True] if len(ordered) else np.zeros(0, dtype=bool)
    return ordered[last], order[last]


def read_sequences(path: Path, ids: np.ndarray, acc: Accumulator) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """The day's ``seq_effective_50_dict`` as one ``[R, 50]`` array per column, aligned with the request ids."""
    parts = list(sequence_batches(path, SEQ_BATCH_ITEMS))
    keys = np.concatenate([k for k, _ in parts]) if parts else np.zeros(0, np.int64)
    stacked = np.concatenate([v for _, v in parts]) if parts else np.zeros((0, SEQ_LEN, len(SEQ_ARRAY_COLUMNS)))
    del parts
    keys, rows = last_of_each_key(keys)
    position = np.minimum(np.searchsorted(keys, ids), max(len(keys) - 1, 0))
    found = (keys[position] == ids) if len(keys) else np.zeros(len(ids), dtype=bool)
    seq = np.zeros((len(ids), SEQ_LEN, len(SEQ_ARRAY_COLUMNS)), dtype=np.int64)
    seq[found] = stacked[rows[position[found]]]
    del stacked
    stats = {
        "requests_without_sequence": int((~found).sum()),
        "sequences_without_request": int(len(keys) - found.sum()),
    }
    return sequence_columns(seq, path, acc), stats


class UnorderedSequencesError(Exception):
    """A key of ``seq_effective_50_dict`` arrived after the chunk of its request was written (keys out of order)."""


class SequenceSource:
    """A day's ``seq_effective_50_dict`` streamed, looked up a chunk of requests (increasing ids) at a time.

    The pickle is read batch by batch (:func:`~stcrank.data.recflow.pickles.iter_dict_pickle`) only as far as the
    chunk's largest request id, so memory is bounded by the chunk when the keys come in increasing request id, as
    the release and the generator write them. A key that arrives after its chunk was written raises
    :class:`UnorderedSequencesError`; the day is then imported again with :class:`SpilledSequences`.
    """

    def __init__(self, path: Path, batches: Iterator[tuple[np.ndarray, np.ndarray]] | None = None) -> None:
        self.path = path
        self.width = len(SEQ_ARRAY_COLUMNS)
        # the checked batches of the pickle, in file order (read ahead on a thread by the day's import)
        self.batches = batches if batches is not None else sequence_batches(path, SEQ_BATCH_ITEMS)
        self.parts: list[tuple[np.ndarray, np.ndarray]] = []  # pulled, not yet looked up (all keys > served)
        self.max_key = np.iinfo(np.int64).min  # largest key pulled so far
        self.ordered = True  # the parts' keys are increasing, within and across parts
        self.served = np.iinfo(np.int64).min  # largest request id looked up so far
        self.found = 0
        self.unmatched = 0

    @classmethod
    def read_ahead(cls, path: Path, chunk_rows: int | None, clock: Clock) -> SequenceSource:
        """A source whose pickle is unpickled ahead on a thread of its own, about a chunk's requests ahead.

        A pickle of :data:`WORKER_MIN_BYTES` or more is unpickled by a worker process
        (:mod:`~stcrank.data.recflow.importer.sequence_worker`), which keeps the pure-Python unpickling off this
        process's GIL, and the thread reads its batches from the pipe; a smaller one is not worth starting a
        process for.

        Args:
            path: The pickle.
            chunk_rows: The import's chunk (RecFlow logs about 200 stage rows a request).
            clock: Gets the time spent receiving the batches (``read_pickle``) and the worker's CPU seconds
                (``unpickle_process``).
        """
        depth = max(2, min(64, (chunk_rows or 0) // (200 * SEQ_BATCH_ITEMS) + 1))

        def done(usage: dict[str, float]) -> None:
            clock.add("unpickle_process", 0.0, usage["cpu_seconds"])

        worker = path.is_file() and path.stat().st_size >= WORKER_MIN_BYTES
        batch_items = SEQ_BATCH_ITEMS

        def read() -> Iterator[tuple[np.ndarray, np.ndarray]]:
            if worker:
                return worker_batches(path, batch_items, done)
            return sequence_batches(path, batch_items)

        return cls(path, ReadAhead(read, depth, clock, "read_pickle", "sequences"))

    def _pull(self) -> bool:
        """Read the next batch into ``parts``; False at the end of the file."""
        batch = next(self.batches, None)
        if batch is None:
            return False
        keys, values = batch
        if len(keys):
            if int(keys.min()) <= self.served:
                raise UnorderedSequencesError
            if not self.parts:
                self.ordered = True
            self.ordered = self.ordered and int(keys[0]) > self.max_key and bool(np.all(keys[1:] > keys[:-1]))
            self.parts.append((keys, values))
            self.max_key = max(self.max_key, int(keys.max()))
        return True

    def _pending(self) -> tuple[np.ndarray, np.ndarray]:
        """The pulled, not yet looked up sequences: sorted distinct keys (the later value of a key wins)."""
        keys = np.concatenate([k for k, _ in self.parts]) if self.parts else np.zeros(0, np.int64)
        values = np.concatenate([v for _, v in self.parts]) if self.parts else np.zeros((0, SEQ_LEN, self.width))
        self.parts = []
        if np.any(keys[1:] <= keys[:-1]):
            keys, rows = last_of_each_key(keys)
            values = values[rows]
        return keys, values.astype(np.int64, copy=False)

    def take(self, ids: np.ndarray, acc: Accumulator) -> dict[str, np.ndarray]:
        """The sequence columns ``[len(ids), 50]`` of requests ``ids`` (zeros where a request has none)."""
        seq = np.zeros((len(ids), SEQ_LEN, self.width), dtype=np.int64)
        if len(ids):
            upper = int(ids[-1])
            while self.max_key <= upper and self._pull():
                pass
            if self.ordered:  # the usual case: look up part by part, without concatenating them
                rest: list[tuple[np.ndarray, np.ndarray]] = []
                for keys, values in self.parts:
                    done = int(np.searchsorted(keys, upper, side="right"))
                    if done:
                        position = np.minimum(np.searchsorted(keys[:done], ids), done - 1)
                        found = keys[position] == ids
                        seq[found] = values[position[found]]
                        self.found += int(found.sum())
                        self.unmatched += done - int(found.sum())
                    if done < len(keys):
                        rest.append((keys[done:], values[done:]))
                self.parts = rest
                self.served = upper
                return sequence_columns(seq, self.path, acc)
            keys, values = self._pending()
            done = int(np.searchsorted(keys, upper, side="right"))
            position = np.minimum(np.searchsorted(keys[:done], ids), max(done - 1, 0))
            found = (keys[position] == ids) if done else np.zeros(len(ids), dtype=bool)
            seq[found] = values[position[found]]
            self.found += int(found.sum())
            self.unmatched += done - int(found.sum())
            if done < len(keys):
                self.parts.append((keys[done:], values[done:]))
            self.served = upper
        return sequence_columns(seq, self.path, acc)

    def stats(self, n_requests: int) -> dict[str, int]:
        """Requests without a sequence, and sequences of no request (the rest of the file is read and checked)."""
        leftover = [self._pending()[0]]
        while self._pull():  # only the keys are kept: the values are checked, then dropped
            leftover.append(self._pending()[0])
        self.unmatched += len(np.unique(np.concatenate(leftover)))
        return {"requests_without_sequence": n_requests - self.found, "sequences_without_request": self.unmatched}

    def close(self) -> None:
        """Stop reading the pickle."""
        self.batches.close()


class SpilledSequences(SequenceSource):
    """``seq_effective_50_dict`` whose keys are not in request id order: spilled to a raw file, read back by id.

    The sequences are written in file order to ``spill_dir/sequences.bin`` (4000 bytes each) with only their keys
    kept in memory (8 bytes a request); each chunk then reads its requests' records through a memory map, so
    memory stays bounded by the chunk.
    """

    def __init__(self, path: Path, spill_dir: Path) -> None:
        self.path = path
        self.width = len(SEQ_ARRAY_COLUMNS)
        self.spill = spill_dir / "sequences.bin"
        keys: list[np.ndarray] = []
        with writing(self.spill, SPILL):
            spill_dir.mkdir(parents=True, exist_ok=True)
            file = self.spill.open("wb")
        with file:
            for batch_keys, values in sequence_batches(path, SEQ_BATCH_ITEMS):
                keys.append(batch_keys)
                with writing(self.spill, SPILL):
                    file.write(np.ascontiguousarray(values).tobytes())
            with writing(self.spill, SPILL):
                file.flush()
        self.records = sum(map(len, keys))
        self.keys, self.rows = last_of_each_key(np.concatenate(keys) if keys else np.zeros(0, np.int64))
        self.found = 0

    def take(self, ids: np.ndarray, acc: Accumulator) -> dict[str, np.ndarray]:
        """The sequence columns ``[len(ids), 50]`` of requests ``ids`` (zeros where a request has none)."""
        seq = np.zeros((len(ids), SEQ_LEN, self.width), dtype=np.int64)
        if len(ids) and len(self.keys):
            position = np.minimum(np.searchsorted(self.keys, ids), len(self.keys) - 1)
            found = self.keys[position] == ids
            rows = self.rows[position[found]]
            if len(rows):
                spilled = np.memmap(self.spill, dtype=np.int64, mode="r", shape=(self.records, SEQ_LEN, self.width))
                seq[found] = spilled[rows]
                del spilled
            self.found += int(found.sum())
        return sequence_columns(seq, self.path, acc)

    def stats(self, n_requests: int) -> dict[str, int]:
        """Requests without a sequence, and sequences of no request."""
        return {
            "requests_without_sequence": n_requests - self.found,
            "sequences_without_request": len(self.keys) - self.found,
        }

    def close(self) -> None:
        """Remove the spill file."""
        shutil.rmtree(self.spill.parent, ignore_errors=True)


def sequence_columns(seq: np.ndarray, path: Path, acc: Accumulator) -> dict[str, np.ndarray]:
    """Split ``[R, 50, 10]`` sequences into the per-column ``[R, 50]`` arrays of the store (checked, narrowed)."""
    valid = seq[:, :, SEQ_ARRAY_COLUMNS.index("time_ms")] > 0
    out: dict[str, np.ndarray] = {}
    for j, name in enumerate(SEQ_ARRAY_COLUMNS):
        values = SEQ_DOMAINS[name].check(seq[:, :, j], path, name, j)
        if name in ITEM_ID_COLUMNS:
            acc.observe(name, values[valid])
        out[f"seq_{name}"] = np.ascontiguousarray(values)
    return out
