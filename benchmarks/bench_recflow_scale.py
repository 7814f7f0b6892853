"""Data at scale: generate, import and read RecFlow days of ~5M and ~50M all_stage rows with bounded memory.

For each size, in child processes (so that each peak resident memory, ``ru_maxrss``, is its own): generate a
one-day release (``synth_recflow``), import it streamed in chunks (``import_recflow(chunk_rows=...)``, UBM table
derived from ``all_stage``), then run the training loaders over the day in parts of ``chunk_rows`` stage rows:
one full pass of the exposures samples and a bounded number of batches of the request (candidates) samples.
Prints one JSON object: times, rows per second, peak memory, and bytes per row on disk (release and store).
Work directories are deleted afterwards unless ``--keep``.

    python benchmarks/bench_recflow_scale.py [--sizes 5M 50M] [--workdir DIR] [--keep] [--load idle|busy|both]

``--load both`` runs every size idle and with a competing busy loop, and reports busy / idle of the rates.

Every child runs single-threaded where it can choose (Arrow's pool of CPU threads is set to one).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
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
from stcrank.data.recflow.importer import import_recflow
manifest = import_recflow(**args)
day = manifest["days"][0]
print(json.dumps({"seconds": time.perf_counter() - started, "peak_rss_mb": peak_mb(), "day": manifest["rows"][day],
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


def _child(code: str, args: dict) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", PRELUDE + code, json.dumps(args)], capture_output=True, text=True, env=env
    )
    if done.returncode:
        raise RuntimeError(done.stderr[-4000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _run_size(name: str, users: int, workdir: Path, chunk_rows: int, loader_chunk_rows: int) -> dict:
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
    generated = _child(GENERATE, synth)
    imported = _child(
        IMPORT,
        {"src": str(release), "dst": str(store), "overwrite": True, "chunk_rows": chunk_rows, "ubm": "all_stage"},
    )
    rows = imported["day"]["all_stage"]
    day = "2024-01-13"
    release_files = {p.name: _size(p) for p in release.iterdir() if p.is_dir() and not p.name.startswith(".")}
    store_bytes = _size(store)
    loaders = [
        _child(
            LOAD,
            {
                "store": str(store),
                "day": day,
                "kind": "exposures",
                "chunk_rows": loader_chunk_rows,
                "max_batches": 0,
                "batch_size": 4096,
            },
        ),
        _child(
            LOAD,
            {
                "store": str(store),
                "day": day,
                "kind": "requests",
                "chunk_rows": loader_chunk_rows,
                "max_batches": 200,
                "batch_size": 256,
            },
        ),
    ]
    return {
        "all_stage_rows": rows,
        "requests": imported["day"]["requests"],
        "exposures": imported["day"]["exposures"],
        "generate": {
            "seconds": round(generated["seconds"], 1),
            "peak_rss_mb": round(generated["peak_rss_mb"]),
            "rows_per_s": round(rows / generated["seconds"]),
        },
        "import": {
            "chunk_rows": chunk_rows,
            "ubm": "all_stage",
            "seconds": round(imported["seconds"], 1),
            "rows_per_s": round(rows / imported["seconds"]),
            "peak_rss_mb": round(imported["peak_rss_mb"]),
            "arrow_pool_peak_mb": round(imported["arrow_pool_peak_mb"]),
            "phase_seconds": imported["day"]["phase_seconds"],
        },
        "disk": {
            "release_bytes": _size(release),
            "release_bytes_by_folder": release_files,
            "all_stage_feather_bytes_per_row": round(release_files.get("all_stage", 0) / rows, 2),
            "store_bytes": store_bytes,
            "store_bytes_per_row": round(store_bytes / rows, 2),
        },
        "loaders": loaders,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["5M", "50M"], choices=list(SIZES))
    parser.add_argument("--workdir", type=Path, default=None, help="where releases and stores go")
    parser.add_argument("--chunk-rows", type=int, default=2_000_000, help="import chunk (all_stage rows)")
    parser.add_argument("--loader-chunk-rows", type=int, default=4_000_000, help="loader part (stage rows)")
    parser.add_argument("--keep", action="store_true", help="keep the generated data")
    add_common_arguments(parser, device=False, threads=False)
    args = parse_arguments(parser)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-recflow-scale-"))
    workdir.mkdir(parents=True, exist_ok=True)

    def measure() -> dict:
        sizes = {}
        for name in args.sizes:
            sizes[name] = _run_size(name, SIZES[name], workdir, args.chunk_rows, args.loader_chunk_rows)
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
