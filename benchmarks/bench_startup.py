"""Start-up time of the ``stcrank`` command line, against a bare ``import lightning.pytorch``.

Each command runs in a fresh interpreter ``--repeats`` times; the median wall time is reported with its ratio to
the median of ``python -c "import lightning.pytorch"`` measured in the same run (the floor any Lightning command
pays), and so is the median CPU time (user + system) of the process, which a busy machine disturbs less. Prints
one JSON object. Usage: ``python benchmarks/bench_startup.py [--repeats 5]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STCRANK = [sys.executable, "-m", "stcrank"]
COMMANDS: dict[str, list[str]] = {
    "import lightning.pytorch": [sys.executable, "-c", "import lightning.pytorch"],
    "stcrank plugins": [*STCRANK, "plugins"],
    "stcrank fit --help": [*STCRANK, "fit", "--help"],
    "stcrank fit --print_config": [
        *STCRANK,
        "fit",
        "--print_config",
        "-c",
        "configs/experiments/recflow/rank/din_baseline.yaml",
    ],
}
BASELINE = "import lightning.pytorch"


def _times(command: list[str]) -> tuple[float, float]:
    """Wall and CPU (user + system) seconds of one run of ``command``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5, help="runs per command; the median is reported")
    options = parser.parse_args()
    # One untimed run warms the file-system cache, so the first timed command is not penalised.
    _times(COMMANDS[BASELINE])
    load_before = os.getloadavg()[0]
    wall: dict[str, float] = {}
    cpu: dict[str, float] = {}
    for name, command in COMMANDS.items():
        runs = [_times(command) for _ in range(options.repeats)]
        wall[name] = statistics.median(run[0] for run in runs)
        cpu[name] = statistics.median(run[1] for run in runs)
    result = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "load_average_1m": {"before": load_before, "after": os.getloadavg()[0]},
        "repeats": options.repeats,
        "median_wall_s": {name: round(seconds, 3) for name, seconds in wall.items()},
        "median_cpu_s": {name: round(seconds, 3) for name, seconds in cpu.items()},
        "wall_ratio_to_import_lightning": {
            name: round(seconds / wall[BASELINE], 2) for name, seconds in wall.items() if name != BASELINE
        },
        "cpu_ratio_to_import_lightning": {
            name: round(seconds / cpu[BASELINE], 2) for name, seconds in cpu.items() if name != BASELINE
        },
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
