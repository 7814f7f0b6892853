"""What every benchmark shares: a controlled competing load, the machine's description, and the common options.

Benchmarks run with ``OMP_WAIT_POLICY=PASSIVE`` as ``stcrank`` commands do (``--wait-policy``). ``--load idle``
measures on the machine as it is, ``--load busy`` while this benchmark keeps ``--busy-cores``
processes spinning (``while True`` loops, started and stopped by the benchmark itself), ``--load both`` does both
and reports the ratio busy / idle of the benchmark's headline figures. On a shared machine "idle" means "without
the benchmark's own extra load": the report carries the 1-minute load average seen at each measurement.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch

LOADS = ("idle", "busy")


def _spin() -> None:  # pragma: no cover - runs in the load processes
    while True:
        pass


@contextlib.contextmanager
def competing_load(cores: int) -> Iterator[None]:
    """Keep ``cores`` processes busy (one spinning loop each) for the duration of the block."""
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_spin, daemon=True) for _ in range(cores)]
    for process in processes:
        process.start()
    time.sleep(0.5)  # let the loops reach the run queue
    try:
        yield
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.join()


WAIT_POLICIES = ("passive", "active", "unset")


def apply_wait_policy(policy: str) -> None:
    """Run this benchmark with ``OMP_WAIT_POLICY=policy`` (``unset``: OpenMP's default), re-executing it if needed.

    OpenMP reads the variable once, when torch loads it, so a benchmark whose environment differs starts again
    with the same arguments and the variable set (``stcrank`` commands default to ``PASSIVE``).
    """
    wanted = None if policy == "unset" else policy.upper()
    current = os.environ.get("OMP_WAIT_POLICY")
    if current == wanted or (current is not None and wanted is not None and current.upper() == wanted):
        return
    if wanted is None:
        os.environ.pop("OMP_WAIT_POLICY", None)
    else:
        os.environ["OMP_WAIT_POLICY"] = wanted
    sys.stdout.flush()
    os.execv(sys.executable, [sys.executable, *sys.argv])


def add_common_arguments(parser: argparse.ArgumentParser, device: bool = True, threads: bool = True) -> None:
    """Add ``--load``, ``--busy-cores``, ``--wait-policy`` and (optionally) ``--threads`` and ``--device``."""
    parser.add_argument(
        "--load",
        choices=["idle", "busy", "both"],
        default="idle",
        help="measure as the machine is, with a competing busy loop, or both (with the busy/idle ratio)",
    )
    parser.add_argument("--busy-cores", type=int, default=1, help="spinning processes of the busy measurement")
    parser.add_argument("--rounds", type=int, default=1, help="alternating idle/busy rounds (best of each is kept)")
    parser.add_argument(
        "--wait-policy",
        choices=WAIT_POLICIES,
        default="passive",
        help="OMP_WAIT_POLICY to run with (stcrank's default: passive; unset: OpenMP's own default)",
    )
    if threads:
        parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    if device:
        parser.add_argument("--device", default="cpu", help="cpu or cuda")


def parse_arguments(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """Parse the options and apply ``--wait-policy`` (which may start the benchmark again, see
    :func:`apply_wait_policy`)."""
    args = parser.parse_args()
    apply_wait_policy(args.wait_policy)
    return args


def apply_threads(threads: int | None) -> None:
    """Set torch's intra-op threads when given."""
    if threads is not None:
        torch.set_num_threads(threads)


def machine(args: argparse.Namespace | None = None) -> dict[str, Any]:
    """The machine and settings a figure was measured on."""
    info: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    if args is not None:
        info["load"] = args.load
        info["busy_cores"] = args.busy_cores
        if hasattr(args, "device"):
            info["device"] = args.device
    return info


def check_device(device: str) -> str:
    """The device, after checking that it exists here (a benchmark on a missing GPU must not report CPU figures)."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {device}: no CUDA device is visible (torch {torch.__version__}); use --device cpu")
    return device


def under_loads(
    measure: Callable[[], dict[str, Any]], args: argparse.Namespace, headline: Callable[[dict[str, Any]], dict]
) -> dict[str, Any]:
    """Run ``measure`` idle, busy or both (per ``--load``), ``--rounds`` times alternately, with the load of each.

    Args:
        measure: Runs the benchmark once and returns its figures.
        args: The parsed options (``load``, ``busy_cores``, ``rounds``).
        headline: Picks the figures (name -> number, larger is better) whose busy / idle ratio is reported.

    Returns:
        ``{"idle": {...}, "busy": {...}, "busy_over_idle": {name: ratio}}`` (the parts that were measured): the
        figures of each load's last round, with ``"best"``, the best of each headline figure over the rounds (the
        round least disturbed by the machine's other work), from which the ratios are taken.
    """
    loads = LOADS if args.load == "both" else (args.load,)
    out: dict[str, Any] = {}
    best: dict[str, dict[str, float]] = {load: {} for load in loads}
    for _ in range(max(1, getattr(args, "rounds", 1))):
        for load in loads:
            with competing_load(args.busy_cores) if load == "busy" else contextlib.nullcontext():
                started = os.getloadavg()[0]
                figures = measure()
                figures["load_average_1min"] = round(max(started, os.getloadavg()[0]), 2)
            for name, value in headline(figures).items():
                best[load][name] = max(value, best[load].get(name, value))
            out[load] = figures
    for load in loads:
        out[load]["best"] = best[load]
    if len(loads) == 2:
        idle, busy = best["idle"], best["busy"]
        out["busy_over_idle"] = {name: round(busy[name] / idle[name], 3) for name in idle if idle[name]}
    return out


def flatten(figures: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Every number of a nested dictionary, keyed by its dotted path (for headline selections)."""
    out: dict[str, float] = {}
    for key, value in figures.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out[name] = float(value)
    return out
