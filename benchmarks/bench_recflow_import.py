"""Throughput and memory of `stcrank data import-recflow` on one generated day of ~5M all_stage rows.

Generates (or reuses) a synthetic release of one day in a work directory, imports it in a child process and prints
one JSON object: rows per second over the whole import and over the day's conversion, the wall and CPU time of each
phase, the CPU seconds of the import (its sequence worker process included) per million rows, and the child's peak
resident memory next to the size of the day as 30 int64 columns (``--load both``: the import idle and with a
competing busy loop, and the ratio busy / idle).

    python benchmarks/bench_recflow_import.py [--workdir DIR] [--users 10000] [--ubm pickle|all_stage|none] [--keep]
        [--load idle|busy|both]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import add_common_arguments, machine, parse_arguments, under_loads

# ~176 logged rows per request (40 samples for each of the four dropped-item stages, as in the release's second
# period) x ~28K requests = ~5M all_stage rows for one day.
SYNTH = {
    "days": 1,
    "seed": 0,
    "requests_per_user_day": 2.8,
    "retrieved": 500,
    "prerank_keep": 250,
    "coarse_keep": 120,
    "rank_keep": 70,
    "stage_samples": 40,
}

CHILD = """
import json, resource, sys, time
import pyarrow as pa
from stcrank.data.recflow.importer import import_recflow
started = time.perf_counter()
chunk_rows = None if sys.argv[4] == "none" else int(sys.argv[4])
manifest = import_recflow(src=sys.argv[1], dst=sys.argv[2], overwrite=True, ubm=sys.argv[3], chunk_rows=chunk_rows)
seconds = time.perf_counter() - started
own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({
    "seconds": seconds,
    "cpu_seconds": own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime,
    "manifest": manifest,
    "peak_rss_mb": own.ru_maxrss / 1024,
    "arrow_pool_peak_mb": pa.default_memory_pool().max_memory() / 2**20,
}))
"""


def _size_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=None, help="where the release and store go (reused)")
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--compression", default="lz4", choices=["lz4", "zstd", "uncompressed"])
    parser.add_argument("--ubm", default="pickle", choices=["pickle", "all_stage", "none"], help="ubm table source")
    parser.add_argument("--chunk-rows", default="2000000", help="rows per streamed chunk, or 'none' (whole day)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    add_common_arguments(parser, device=False, threads=False)
    args = parse_arguments(parser)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_recflow_"))
    release, store = workdir / f"release-{args.users}-{args.compression}", workdir / "store"
    synth_seconds = None
    if not (release / "others" / "id_cnt.pkl").is_file():
        from stcrank.data.recflow.synth import synth_recflow

        started = time.perf_counter()
        synth_recflow(out=str(release), users=args.users, compression=args.compression, overwrite=True, **SYNTH)
        synth_seconds = time.perf_counter() - started

    def measure() -> dict:
        result = subprocess.run(
            [sys.executable, "-c", CHILD, str(release), str(store), args.ubm, args.chunk_rows],
            capture_output=True,
            text=True,
            check=True,
        )
        child = json.loads(result.stdout.strip().splitlines()[-1])
        manifest = child["manifest"]
        (day,) = manifest["days"]
        rows = manifest["rows"][day]
        return {
            "all_stage_rows": rows["all_stage"],
            "requests": rows["requests"],
            "exposures": rows["exposures"],
            "ubm_rows": rows.get("ubm_rows", 0),
            "import_seconds": round(child["seconds"], 3),
            "day_seconds": rows["seconds"],
            "rows_per_second": round(rows["all_stage"] / child["seconds"]),
            "rows_per_second_day": round(rows["all_stage"] / rows["seconds"]),
            "rows_per_second_without_ubm": round(
                rows["all_stage"] / (rows["seconds"] - rows["phase_seconds"].get("ubm", 0))
            ),
            "phase_seconds": rows["phase_seconds"],
            "phase_cpu_seconds": rows.get("phase_cpu_seconds"),
            "cpu_seconds": round(child["cpu_seconds"], 2),
            "cpu_seconds_per_million_rows": round(child["cpu_seconds"] / rows["all_stage"] * 1e6, 3),
            "peak_rss_mb": round(child["peak_rss_mb"], 1),
            "arrow_pool_peak_mb": round(child["arrow_pool_peak_mb"], 1),
            "day_as_int64_mb": round(rows["all_stage"] * 30 * 8 / 2**20, 1),
            "store_mb": round(_size_mb(store), 1),
        }

    def headline(figures: dict) -> dict:
        return {key: figures[key] for key in ("rows_per_second", "rows_per_second_day")}

    report = {
        "benchmark": "recflow_import",
        "feather_compression": args.compression,
        "ubm": args.ubm,
        "chunk_rows": args.chunk_rows,
        "release_mb": round(_size_mb(release), 1),
        "synth_seconds": None if synth_seconds is None else round(synth_seconds, 1),
        "machine": machine(args),
        "results": under_loads(measure, args, headline),
        "child_max_rss_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
    }
    print(json.dumps(report))
    if not args.keep and args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
