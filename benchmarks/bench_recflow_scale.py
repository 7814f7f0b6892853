"""Data at scale: generate, import and read RecFlow days of ~5M and ~50M all_stage rows with bounded memory.

For each size, in child processes (so that each peak resident memory, ``ru_maxrss``, is its own): generate a
one-day release (``synth_recflow``), import it streamed in chunks (``import_recflow(chunk_rows=...)``, UBM table
derived from ``all_stage`` by default), then run the training loaders over the day in parts of ``chunk_rows``
stage rows: one full pass of the exposures samples and a bounded number of batches of the request (candidates)
samples. Prints one JSON object: times, rows per second, peak memory, and bytes per row on disk (release and store).

The import is reported as a whole (``rows_per_s``: the day's all_stage rows over the whole import, official test
files and checksums included) and per phase: wall seconds, all_stage rows per wall second, and CPU seconds per
million all_stage rows (the import's stages run side by side on threads, and the sequence pickle in a worker
process, so the phases' wall seconds overlap; their CPU seconds add up to the import's cost). Its memory is the
import process's ``ru_maxrss`` and, sampled every 20 ms, the resident memory of the import process and its worker
processes together (``peak_tree_rss_mb``). The load average and CPU count are printed with it: on a machine shared
with other jobs, wall-clock figures depend on them, CPU seconds much less.

    python benchmarks/bench_recflow_scale.py [--sizes 5M 50M] [--workdir DIR] [--keep] [--reuse]
        [--steps generate import loaders] [--ubm all_stage|pickle|none] [--repeat N]

``--reuse`` imports a release already generated in ``--workdir`` (with ``--keep``) instead of generating it again;
``--repeat`` imports it several times (the figures of each run are printed). Arrow's pool of CPU threads is set to
one in every child, as the loaders' own threads are. ``--load both`` runs every size idle and with a competing busy
loop, and reports busy / idle of the rates.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import add_common_arguments, flatten, machine, parse_arguments, under_loads

# ~205 logged rows per request (13 + 4 x 48), about the release's 204.
FUNNEL = {"retrieved": 500, "prerank_keep": 250, "coarse_keep": 120, "rank_keep": 70, "stage_samples": 48}
SIZES = {"0.5M": 400, "5M": 4_000, "50M": 40_000}
"""Users per size; 6.1 requests per user and day."""

PRELUDE = """
import json, resource, sys, time
import pyarrow as pa
pa.set_cpu_count(1)
pa.set_io_thread_count(1)
def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
args = json.loads(sys.argv[1])
started = time.perf_counter()
"""

GENERATE = """
from stcrank.data.recflow.synth import synth_recflow
synth_recflow(**args)
print(json.dumps({"seconds": time.perf_counter() - started, "peak_rss_mb": peak_mb()}))
"""

IMPORT = """
import os
from stcrank.data.recflow.importer import import_recflow
load_before = os.getloadavg()[0]
started = time.perf_counter()
manifest = import_recflow(**args)
seconds = time.perf_counter() - started
day = manifest["days"][0]
own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"seconds": seconds, "peak_rss_mb": peak_mb(), "day": manifest["rows"][day],
                  "phase_seconds": manifest.get("phase_seconds", {}),
                  "phase_cpu_seconds": manifest.get("phase_cpu_seconds", {}),
                  "cpu_seconds": own.ru_utime + own.ru_stime,
                  "worker_cpu_seconds": children.ru_utime + children.ru_stime,
                  "main_thread_cpu_seconds": time.thread_time(),
                  "load_average_1m": [load_before, os.getloadavg()[0]],
                  "arrow_pool_peak_mb": pa.default_memory_pool().max_memory() / 2**20}))
"""

LOAD = """
import torch
torch.set_num_threads(1)
from stcrank.data.recflow.datamodule import RecFlowDataModule
store, day, kind, chunk_rows, max_batches, batch_size = (args[k] for k in
    ("store", "day", "kind", "chunk_rows", "max_batches", "batch_size"))
module = RecFlowDataModule(store, batch_size=batch_size, train_days=[day], sample_kind=kind, chunk_rows=chunk_rows)
loader = module.train_dataloader(rank=0, world_size=1)
built = time.perf_counter() - started
samples = batches = 0
for batch in loader:
    samples += len(batch["request_id"])
    batches += 1
    if max_batches and batches >= max_batches:
        break
seconds = time.perf_counter() - started - built
print(json.dumps({"kind": kind, "parts": len(loader.dataset), "batches": batches, "samples": samples,
                  "setup_seconds": built, "seconds": seconds, "samples_per_s": samples / seconds,
                  "peak_rss_mb": peak_mb()}))
"""


def _tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and its descendants (Linux ``/proc``), in MB; 0 where it cannot be read."""
    total, pending = 0, [pid]
    while pending:
        current = pending.pop()
        try:
            with open(f"/proc/{current}/status") as status:
                total += next((int(line.split()[1]) for line in status if line.startswith("VmRSS:")), 0)
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as children:
                    pending.extend(int(child) for child in children.read().split())
        except (OSError, ValueError):
            continue
    return total / 1024


def _child(code: str, args: dict) -> dict:
    """Run ``code`` in a child process; its JSON output, and the peak resident memory of its process tree."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen(
            [sys.executable, "-c", PRELUDE + code, json.dumps(args)], stdout=out, stderr=err, text=True, env=env
        )
        peak = 0.0
        while process.poll() is None:
            peak = max(peak, _tree_rss_mb(process.pid))
            time.sleep(0.02)
        out.seek(0)
        err.seek(0)
        if process.returncode:
            raise RuntimeError(err.read()[-4000:])
        result = json.loads(out.read().strip().splitlines()[-1])
    result["peak_tree_rss_mb"] = peak
    return result


def _import_figures(imported: dict, chunk_rows: int, ubm: str) -> dict:
    """Whole-import and per-phase figures of one import (see the module docstring)."""
    day = imported["day"]
    rows = day["all_stage"]
    millions = rows / 1e6
    wall = {**day.get("phase_seconds", {}), **imported.get("phase_seconds", {})}
    cpu = {**day.get("phase_cpu_seconds", {}), **imported.get("phase_cpu_seconds", {})}
    phases = {
        name: {
            "seconds": round(seconds, 2),
            "rows_per_s": round(rows / seconds) if seconds and not name.startswith("wait") else None,
            "cpu_seconds": round(cpu[name], 2) if name in cpu else None,
            "cpu_seconds_per_million_rows": round(cpu[name] / millions, 3) if name in cpu else None,
        }
        for name, seconds in wall.items()
    }
    total_cpu = imported["cpu_seconds"] + imported["worker_cpu_seconds"]
    return {
        "chunk_rows": chunk_rows,
        "ubm": ubm,
        "seconds": round(imported["seconds"], 2),
        "rows_per_s": round(rows / imported["seconds"]),
        "day_seconds": day["seconds"],
        "day_rows_per_s": round(rows / day["seconds"]),
        "cpu_seconds": round(total_cpu, 2),
        "cpu_seconds_per_million_rows": round(total_cpu / millions, 3),
        "worker_cpu_seconds": round(imported["worker_cpu_seconds"], 2),
        "main_thread_cpu_seconds": round(imported["main_thread_cpu_seconds"], 2),
        "phases": phases,
        "peak_rss_mb": round(imported["peak_rss_mb"]),
        "peak_tree_rss_mb": round(imported["peak_tree_rss_mb"]),
        "arrow_pool_peak_mb": round(imported["arrow_pool_peak_mb"]),
        "load_average_1m": [round(load, 2) for load in imported["load_average_1m"]],
    }


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _loaders(store: Path, day: str, loader_chunk_rows: int) -> list[dict]:
    common = {"store": str(store), "day": day, "chunk_rows": loader_chunk_rows}
    return [
        _child(LOAD, {**common, "kind": "exposures", "max_batches": 0, "batch_size": 4096}),
        _child(LOAD, {**common, "kind": "requests", "max_batches": 200, "batch_size": 256}),
    ]


def _run_size(name: str, users: int, workdir: Path, args: argparse.Namespace) -> dict:
    release, store = workdir / f"release-{name}", workdir / f"store-{name}"
    synth = {
        "out": str(release),
        "users": users,
        "days": 1,
        "requests_per_user_day": 6.1,
        "history_days": 0,
        "seed": 0,
        "overwrite": True,
        **FUNNEL,
    }
    out: dict = {}
    reused = args.reuse and (release / "others" / "id_cnt.pkl").is_file()
    if "generate" in args.steps and not reused:
        generated = _child(GENERATE, synth)
        out["generate"] = {
            "seconds": round(generated["seconds"], 1),
            "peak_rss_mb": round(generated["peak_rss_mb"]),
        }
    if "import" in args.steps or "loaders" in args.steps:
        options = {"src": str(release), "dst": str(store), "overwrite": True, "chunk_rows": args.chunk_rows}
        runs = [
            _import_figures(_child(IMPORT, {**options, "ubm": args.ubm}), args.chunk_rows, args.ubm)
            for _ in range(args.repeat if "import" in args.steps else 1)
        ]
        rows_file = json.loads((store / "manifest.json").read_text())["rows"]
        day = next(iter(rows_file))
        rows = rows_file[day]["all_stage"]
        out = {
            "all_stage_rows": rows,
            "requests": rows_file[day]["requests"],
            "exposures": rows_file[day]["exposures"],
            **out,
            "import": runs[0] if len(runs) == 1 else runs,
            "cpu_count": os.cpu_count(),
        }
        if "generate" in out:
            out["generate"]["rows_per_s"] = round(rows / out["generate"]["seconds"])
        release_files = {p.name: _size(p) for p in release.iterdir() if p.is_dir() and not p.name.startswith(".")}
        store_bytes = _size(store)
        out["disk"] = {
            "release_bytes": _size(release),
            "release_bytes_by_folder": release_files,
            "all_stage_feather_bytes_per_row": round(release_files.get("all_stage", 0) / rows, 2),
            "store_bytes": store_bytes,
            "store_bytes_per_row": round(store_bytes / rows, 2),
        }
        if "loaders" in args.steps:
            out["loaders"] = _loaders(store, day, args.loader_chunk_rows)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["5M", "50M"], choices=list(SIZES))
    parser.add_argument("--workdir", type=Path, default=None, help="where releases and stores go")
    parser.add_argument("--chunk-rows", type=int, default=2_000_000, help="import chunk (all_stage rows)")
    parser.add_argument("--loader-chunk-rows", type=int, default=4_000_000, help="loader part (stage rows)")
    parser.add_argument("--ubm", default="all_stage", choices=["all_stage", "pickle", "none"], help="import --ubm")
    parser.add_argument(
        "--steps", nargs="+", default=["generate", "import", "loaders"], choices=["generate", "import", "loaders"]
    )
    parser.add_argument("--repeat", type=int, default=1, help="imports of each size (each one reported)")
    parser.add_argument("--reuse", action="store_true", help="import the release found in --workdir, if any")
    parser.add_argument("--keep", action="store_true", help="keep the generated data")
    add_common_arguments(parser, device=False, threads=False)
    args = parse_arguments(parser)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-recflow-scale-"))
    workdir.mkdir(parents=True, exist_ok=True)

    def measure() -> dict:
        sizes = {}
        for name in args.sizes:
            sizes[name] = _run_size(name, SIZES[name], workdir, args)
            if not args.keep:
                for path in workdir.glob(f"*-{name}"):
                    shutil.rmtree(path)
        return sizes

    def headline(figures: dict) -> dict:
        return {key: value for key, value in flatten(figures).items() if "per_s" in key}

    out: dict = {"funnel": FUNNEL, "requests_per_user_day": 6.1, "machine": machine(args)}
    try:
        out["sizes"] = under_loads(measure, args, headline)
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
