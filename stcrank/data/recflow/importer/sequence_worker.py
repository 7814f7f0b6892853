"""Unpickling a day's ``seq_effective_50_dict`` in a process of its own, its checked batches streamed back.

Interpreting a pickle is pure Python: on a thread of the import it would hold the GIL for a second or more per
10M rows, and every other stage (decoding Feather, writing Parquet, converting the chunk) makes many short calls
that release the GIL and must wait, up to the interpreter's switch interval each time, to take it back. So the
import runs :func:`~stcrank.data.recflow.pickle_contents.sequence_batches` (the same safe reader and checks) in a
child process (:func:`main` with the arguments ``PICKLE BATCH_ITEMS``), which writes to its
standard output, per batch, a header (``b"B"``, items, bytes of the sequences), the int64 request ids and the
int64 ``[n, 50, 10]`` sequences; at the end ``b"D"`` and a JSON payload with its CPU time and peak memory; on an
error ``b"E"`` and a JSON payload naming the error. Nothing but raw integers and JSON crosses the pipe (no pickle).

:func:`worker_batches` is the parent's side: it starts the process, reads the batches straight into numpy arrays,
and raises the worker's error as the same exception, with the same message. The worker dies with its parent (its
next write fails once nobody reads the pipe) and is killed when the reading stops early.
"""

from __future__ import annotations

import json
import resource
import struct
import subprocess
import sys
import tempfile
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from stcrank.data.recflow.errors import RecFlowFormatError
from stcrank.data.recflow.pickle_contents import SEQ_SHAPE, sequence_batches

_WORKER = "import sys; from stcrank.data.recflow.importer.sequence_worker import main; main(sys.argv[1:])"
HEADER = struct.Struct("<cQQ")
"""A frame's kind (``B`` batch, ``D`` done, ``E`` error), its items and its payload bytes."""


def _send(out: BinaryIO, kind: bytes, items: int, payload: bytes | memoryview = b"") -> None:
    out.write(HEADER.pack(kind, items, len(payload)))
    if payload:
        out.write(payload)


def _error_payload(error: BaseException) -> dict[str, Any]:
    from stcrank.data.recflow.pickles import UnsafePickleError

    if isinstance(error, UnsafePickleError):
        return {"type": "UnsafePickleError", "args": [error.path, error.module, error.name, error.offset]}
    if isinstance(error, RecFlowFormatError):
        return {"type": "RecFlowFormatError", "message": str(error)}
    return {"type": type(error).__name__, "message": str(error)}


def serve(path: str, batch_items: int, out: BinaryIO) -> None:
    """Write the checked batches of the sequence pickle ``path`` to ``out`` (the worker's side)."""
    try:
        for keys, values in sequence_batches(path, batch_items):
            keys = np.ascontiguousarray(keys, dtype=np.int64)
            values = np.ascontiguousarray(values, dtype=np.int64)
            out.write(HEADER.pack(b"B", len(keys), values.nbytes))
            out.write(memoryview(keys).cast("B"))
            out.write(memoryview(values).cast("B"))
        usage = resource.getrusage(resource.RUSAGE_SELF)
        done = {"cpu_seconds": usage.ru_utime + usage.ru_stime, "peak_rss_mb": usage.ru_maxrss / 1024}
        _send(out, b"D", 0, json.dumps(done).encode())
    except BrokenPipeError:  # the import stopped reading (it failed or was killed)
        return
    except Exception as error:  # reported to the import, which raises it
        _send(out, b"E", 0, json.dumps(_error_payload(error)).encode())
    out.flush()


def _raise(path: Path, payload: bytes) -> None:
    from stcrank.data.recflow.pickles import UnsafePickleError

    error = json.loads(payload)
    if error["type"] == "UnsafePickleError":
        raise UnsafePickleError(*error["args"])
    if error["type"] == "RecFlowFormatError":
        raise RecFlowFormatError(error["message"])
    raise RuntimeError(f"{path}: reading the sequences failed: {error['type']}: {error['message']}")


def _read_into(stream: BinaryIO, target: memoryview) -> bool:
    """Fill ``target`` from ``stream``; False if the stream ends first."""
    done = 0
    while done < len(target):
        got = stream.readinto(target[done:])  # type: ignore[attr-defined]
        if not got:
            return False
        done += got
    return True


def worker_batches(
    path: Path, batch_items: int, on_done: Callable[[dict[str, float]], None] | None = None
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The checked batches of a sequence pickle, unpickled by a worker process (see the module docstring).

    Args:
        path: The ``seq_effective_50_dict`` pickle.
        batch_items: Items per batch.
        on_done: Called with the worker's CPU seconds and peak resident memory once it has read the whole file.

    Yields:
        ``(request ids int64 [n], sequences int64 [n, 50, 10])`` in the file's order, as
        :func:`~stcrank.data.recflow.pickle_contents.sequence_batches` yields them.

    Raises:
        RecFlowFormatError: What the reader raises (:class:`~stcrank.data.recflow.pickles.UnsafePickleError`
            included), with its message; or the worker stopped without finishing.
    """
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(
            [sys.executable, "-c", _WORKER, str(path), str(batch_items)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=errors,
        )
        try:
            assert process.stdout is not None
            usage = yield from _receive(process.stdout, path)
            if usage is not None:
                if on_done is not None:
                    on_done(usage)
                return
            process.wait()
            errors.seek(0)
            detail = errors.read()[-2000:].decode(errors="replace").strip()
            raise RecFlowFormatError(
                f"{path}: the process reading the sequences stopped (exit code {process.returncode}) before the "
                f"end of the file{': ' + detail if detail else ''}"
            )
        finally:
            if process.poll() is None:
                process.kill()
            process.wait()
            if process.stdout is not None:
                process.stdout.close()


def _receive(stream: BinaryIO, path: Path) -> Generator[tuple[np.ndarray, np.ndarray], None, dict[str, float] | None]:
    """Yield the batches of a worker's output; return its usage at the end, or None if it stopped early."""
    header = bytearray(HEADER.size)
    while _read_into(stream, memoryview(header)):
        kind, items, size = HEADER.unpack(header)
        if kind == b"B" and size == items * 8 * SEQ_SHAPE[0] * SEQ_SHAPE[1]:
            keys = np.empty(items, dtype=np.int64)
            values = np.empty((items, *SEQ_SHAPE), dtype=np.int64)
            if not _read_into(stream, memoryview(keys).cast("B")):
                return None
            if not _read_into(stream, memoryview(values).cast("B")):
                return None
            yield keys, values
            continue
        payload = bytearray(size)
        if kind not in (b"D", b"E") or not _read_into(stream, memoryview(payload)):
            return None
        if kind == b"E":
            _raise(path, bytes(payload))
        return json.loads(bytes(payload))
    return None


def main(argv: list[str]) -> None:
    """The worker: ``PICKLE BATCH_ITEMS``."""
    path, batch_items = argv
    serve(path, int(batch_items), sys.stdout.buffer)
