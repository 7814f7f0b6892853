"""Speed and memory of stcrank's pickle reader on RecFlow-shaped pickles, next to Python's C unpickler.

Writes a sequence dict (request id -> int64 (50, 10)) and a UBM dict (request id -> stage -> int64 (n, 8)) in
protocols 3 (as the generator writes them) and 4 (``pickle.dump``'s default), reads each with
:func:`stcrank.data.recflow.pickles.iter_dict_pickle` in a child process, and prints one JSON object: arrays per
second, wall and CPU seconds (modules imported before the clock starts), the child's peak resident memory, and the
same read with :func:`pickle.load` (unsafe on downloaded files: the reference for speed only).

    python benchmarks/bench_pickle_reader.py [--requests 20000] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

CHILD = """
import json, pickle, sys, time
from stcrank.data.recflow.pickles import iter_dict_pickle
reader = sys.argv[2]
started, cpu_started = time.perf_counter(), time.process_time()
arrays = 0
if reader == "stcrank":
    for batch in iter_dict_pickle(sys.argv[1], batch_items=1024):
        arrays += sum(len(v) if isinstance(v, dict) else 1 for _, v in batch)
else:
    with open(sys.argv[1], "rb") as file:
        whole = pickle.load(file)
    arrays = sum(len(v) if isinstance(v, dict) else 1 for v in whole.values())
seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"seconds": seconds, "cpu_seconds": cpu_seconds, "arrays": arrays, "peak_mb": peak / 1024}))
"""


def _write(workdir: Path, requests: int) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    seq = {int(i): rng.integers(0, 10**6, (50, 10)) for i in range(requests)}
    stages = ("realshow", "rerank_pos", "rank_pos", "rank_neg", "coarse_neg", "prerank_neg")
    ubm = {int(i): {s: rng.integers(0, 10**6, (int(rng.integers(1, 40)), 8)) for s in stages} for i in range(requests)}
    paths = {}
    for name, value in (("seq", seq), ("ubm", ubm)):
        for protocol in (3, 4):
            path = workdir / f"{name}-p{protocol}.pkl"
            path.write_bytes(pickle.dumps(value, protocol=protocol))
            paths[f"{name}-p{protocol}"] = path
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_pickle_"))
    workdir.mkdir(parents=True, exist_ok=True)
    report: dict[str, object] = {"benchmark": "pickle_reader", "requests": args.requests}
    for name, path in _write(workdir, args.requests).items():
        row: dict[str, object] = {"file_mb": round(path.stat().st_size / 2**20, 1)}
        for reader in ("stcrank", "pickle.load"):
            done = subprocess.run([sys.executable, "-c", CHILD, str(path), reader], capture_output=True, text=True)
            result = json.loads(done.stdout.strip().splitlines()[-1])
            row[reader] = {
                "arrays_per_second": round(result["arrays"] / result["seconds"]),
                "seconds": round(result["seconds"], 3),
                "cpu_seconds": round(result["cpu_seconds"], 3),
                "peak_mb": round(result["peak_mb"], 1),
            }
        row["cpu_ratio"] = round(row["stcrank"]["cpu_seconds"] / row["pickle.load"]["cpu_seconds"], 2)
        report[name] = row
    report["cpu_count"] = len(os.sched_getaffinity(0))
    report["load_average_1m"] = round(os.getloadavg()[0], 2)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
