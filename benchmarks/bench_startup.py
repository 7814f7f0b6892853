"""Start-up time of the ``stcrank`` command line, against a bare ``import lightning.pytorch``.

Each command runs in a fresh interpreter ``--repeats`` times; the median wall time is reported with its ratio to
the median of ``python -c "import lightning.pytorch"`` measured in the same run (the floor any Lightning command
pays). Prints one JSON object. Usage: ``python benchmarks/bench_startup.py [--repeats 5]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
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


def _wall_time(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5, help="runs per command; the median is reported")
    options = parser.parse_args()
    # One untimed run warms the file-system cache, so the first timed command is not penalised.
    _wall_time(COMMANDS[BASELINE])
    medians: dict[str, float] = {}
    for name, command in COMMANDS.items():
        medians[name] = statistics.median(_wall_time(command) for _ in range(options.repeats))
    result = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "load_average_1m": os.getloadavg()[0],
        "repeats": options.repeats,
        "median_s": {name: round(seconds, 3) for name, seconds in medians.items()},
        "ratio_to_import_lightning": {
            name: round(seconds / medians[BASELINE], 2) for name, seconds in medians.items() if name != BASELINE
        },
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
