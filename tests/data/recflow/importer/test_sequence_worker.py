"""The sequence pickle unpickled by a worker process gives exactly what the reader gives in process, errors included."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest

from stcrank.data.recflow.errors import RecFlowFormatError
from stcrank.data.recflow.importer import import_recflow, sequence_worker, sequences
from stcrank.data.recflow.pickle_contents import sequence_batches
from stcrank.data.recflow.pickles import DictPickleWriter, UnsafePickleError


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo unsafe",))


def _sequences(n, seed=0):
    rng = np.random.default_rng(seed)
    return {int(key): rng.integers(0, 10**9, (50, 10)) for key in np.sort(rng.choice(10**12, n, replace=False))}


def _outcome(read):
    try:
        return [(k.tolist(), v.tobytes()) for k, v in read()], None
    except Exception as error:  # compared between the two readers
        return None, (type(error), str(error))


def test_the_worker_gives_the_reader_s_batches(tmp_path):
    path = tmp_path / "seq.pkl"
    with DictPickleWriter(path) as writer:
        writer.write(_sequences(2500).items())
    usage = []
    got = list(sequence_worker.worker_batches(path, 1000, usage.append))
    expected = list(sequence_batches(path, 1000))
    assert [len(k) for k, _ in got] == [1000, 1000, 500]
    for (keys, values), (want_keys, want_values) in zip(got, expected, strict=True):
        assert keys.dtype == np.int64 and values.dtype == np.int64 and values.shape == want_values.shape
        assert np.array_equal(keys, want_keys) and np.array_equal(values, want_values)
    assert len(usage) == 1 and usage[0]["cpu_seconds"] > 0


@pytest.mark.parametrize("damage", ["unsafe", "shape", "truncated", "not a pickle", "missing"])
def test_the_worker_raises_the_reader_s_error(tmp_path, damage):
    path = tmp_path / "seq.pkl"
    seq = _sequences(40)
    if damage == "unsafe":
        path.write_bytes(pickle.dumps({**seq, 123: _RunsCode()}))
    elif damage == "shape":
        path.write_bytes(pickle.dumps({k: v[:, :9] for k, v in seq.items()}))
    elif damage == "truncated":
        path.write_bytes(pickle.dumps(seq)[:-3000])
    elif damage == "not a pickle":
        path.write_bytes(b"\x00" * 100)
    got = _outcome(lambda: sequence_worker.worker_batches(path, 16))
    expected = _outcome(lambda: sequence_batches(path, 16))
    assert expected[1] is not None and issubclass(expected[1][0], RecFlowFormatError)
    assert got == expected  # the same exception class and message
    if damage == "unsafe":
        assert expected[1][0] is UnsafePickleError


def test_a_worker_that_dies_is_an_error_naming_the_file(tmp_path, monkeypatch):
    path = tmp_path / "seq.pkl"
    path.write_bytes(pickle.dumps(_sequences(3)))
    monkeypatch.setattr(sequence_worker, "_WORKER", "import sys; sys.stdout.buffer.write(b'B12'); sys.exit(3)")
    stopped = r"seq\.pkl: the process reading the sequences stopped \(exit code 3\)"
    with pytest.raises(RecFlowFormatError, match=stopped):
        list(sequence_worker.worker_batches(path, 16))


def test_the_import_through_the_worker_equals_the_import_in_process(make_release, tmp_path, monkeypatch):
    release = make_release(days=2)
    in_process = import_recflow(src=str(release), dst=str(tmp_path / "a"), chunk_rows=97)
    monkeypatch.setattr(sequences, "WORKER_MIN_BYTES", 0)
    through_worker = import_recflow(src=str(release), dst=str(tmp_path / "b"), chunk_rows=97)
    assert all("unpickle_process" in through_worker["rows"][day]["phase_cpu_seconds"] for day in in_process["days"])
    files_a, files_b = (sorted((tmp_path / name).rglob("*.parquet")) for name in ("a", "b"))
    for a, b in zip(files_a, files_b, strict=True):
        assert a.relative_to(tmp_path / "a") == b.relative_to(tmp_path / "b") and a.read_bytes() == b.read_bytes()
    path = release / "seq_effective_50_dict" / "2024-01-14.pkl"
    with open(path, "rb") as file:  # a file the test generated
        seq = pickle.load(file)
    path.write_bytes(pickle.dumps({**seq, 123: _RunsCode()}))
    with pytest.raises(UnsafePickleError, match=r"seq_effective_50_dict/2024-01-14\.pkl: refused to unpickle"):
        import_recflow(src=str(release), dst=str(tmp_path / "c"), chunk_rows=97)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "release"]


def test_keys_out_of_order_through_the_worker_are_spilled_and_equal(make_release, tmp_path, monkeypatch, caplog):
    release = make_release(days=1)
    path = release / "seq_effective_50_dict" / "2024-01-13.pkl"
    with open(path, "rb") as file:  # a file the test generated
        seq = pickle.load(file)
    keys = list(seq)
    path.write_bytes(pickle.dumps({key: seq[key] for key in reversed(keys)}))
    all_stage = release / "all_stage" / "2024-01-13.feather"
    feather.write_feather(feather.read_table(all_stage), str(all_stage), chunksize=29)  # several chunks
    expected = import_recflow(src=str(release), dst=str(tmp_path / "a"), chunk_rows=None)  # whole, in process
    monkeypatch.setattr(sequences, "WORKER_MIN_BYTES", 0)
    monkeypatch.setattr(sequences, "SEQ_BATCH_ITEMS", 4)
    started = []

    def recorded(*args, **kwargs):
        started.append(args[0])
        return sequence_worker.worker_batches(*args, **kwargs)

    monkeypatch.setattr(sequences, "worker_batches", recorded)
    with caplog.at_level("INFO"):
        got = import_recflow(src=str(release), dst=str(tmp_path / "b"), chunk_rows=97)
    assert started == [path]  # streamed through the worker first
    assert "spilling the sequences" in caplog.text  # the worker was stopped, the day imported again
    if os.path.isdir("/proc"):
        assert not _workers_reading(path)  # stopped, not left running
    day = "2024-01-13"
    for name in ("requests", "candidates"):
        a, b = (tmp_path / store / "days" / day / f"{name}.parquet" for store in ("a", "b"))
        assert pq.read_table(a).equals(pq.read_table(b)), name
    assert got["rows"][day]["requests_without_sequence"] == expected["rows"][day]["requests_without_sequence"]


_KILLED = """
import sys
from stcrank.data.recflow.importer import import_recflow, sequences
sequences.WORKER_MIN_BYTES = 0
import_recflow(src=sys.argv[1], dst=sys.argv[2], chunk_rows=97)
"""


def _workers_reading(path):
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as file:
                if str(path).encode() in file.read():
                    found.append(int(pid))
        except OSError:
            continue
    return found


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds the worker through /proc")
def test_the_worker_ends_with_a_killed_import(make_release, tmp_path):
    release = make_release(days=2)
    env = {**os.environ, "STCRANK_IMPORT_KILL_AT": "chunk"}
    killed = subprocess.run(
        [sys.executable, "-c", _KILLED, str(release), str(tmp_path / "store")], env=env, capture_output=True, text=True
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-500:]
    deadline = time.monotonic() + 20
    while _workers_reading(release / "seq_effective_50_dict") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _workers_reading(release / "seq_effective_50_dict")
