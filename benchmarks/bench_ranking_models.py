"""Training and evaluation throughput of the coarse-ranking and ranking networks through the real data module.

Generates (or reuses) a synthetic RecFlow store, then for DSSM and DIN, each with and without the competing-item
sequence, measures training samples per second (loader + forward + backward + Adam step) and evaluation requests
per second (stage-candidate scoring over the test day's candidates loader), as wall-clock rates and per CPU-second
of the process (``time.process_time``, less sensitive to other load on a shared machine), each split by phase
(loader, forward, backward; loader, scoring). Prints one JSON object.

``--baseline PATH`` compares with another checkout of stcrank (``git worktree add /tmp/base <commit>``): the same
measurement runs in child processes importing stcrank from this checkout and from ``PATH``, alternately,
``--repeats`` times each, and the best figure of each side and their ratio (this / baseline) are reported, so both
come from one run on one machine under the same load and threads.

    python benchmarks/bench_ranking_models.py [--workdir DIR] [--users 600] [--steps 20] [--threads N]
        [--device cpu|cuda] [--only din dssm] [--load idle|busy|both] [--baseline PATH] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from harness import add_common_arguments, apply_threads, check_device, machine, parse_arguments, under_loads

NETWORKS = ("dssm", "dssm_competing", "din", "din_competing")
HEADLINE = ("train_samples_per_s", "train_samples_per_cpu_s", "eval_requests_per_s", "eval_requests_per_cpu_s")


def ensure_store(workdir: Path, users: int) -> Path:
    """Generate and import a synthetic store under ``workdir`` unless it is there already."""
    from stcrank.data.recflow.importer import import_recflow
    from stcrank.data.recflow.synth import synth_recflow

    store = workdir / f"store-{users}"
    if not (store / "manifest.json").is_file():
        release = workdir / f"release-{users}"
        synth_recflow(out=str(release), users=users, days=3, seed=0, overwrite=True)
        import_recflow(src=str(release), dst=str(store), overwrite=True)
    return store


class Clock:
    """Wall-clock and process CPU seconds, synchronising CUDA before each reading."""

    def __init__(self, device: str) -> None:
        self.cuda = device.startswith("cuda")

    def __call__(self) -> tuple[float, float]:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter(), time.process_time()


def _to(batch: dict[str, torch.Tensor], device: str) -> dict[str, torch.Tensor]:
    return batch if device == "cpu" else {key: value.to(device, non_blocking=True) for key, value in batch.items()}


def measure(store: Path, name: str, steps: int, batch_size: int, device: str) -> dict[str, float]:
    """Training and evaluation figures of one network (``name`` in :data:`NETWORKS`)."""
    from stcrank.data.recflow.ranking_data import RecFlowRankingDataModule
    from stcrank.models.din import DIN
    from stcrank.models.dssm import DSSM
    from stcrank.tasks.ranking import RankingTask

    network = DIN if name.startswith("din") else DSSM
    competing = name.endswith("competing")
    data = RecFlowRankingDataModule(
        str(store), batch_size=batch_size, eval_batch_size=256, competing_stage="rank_pos" if competing else None
    )
    task = RankingTask(network=lambda sizes: network(sizes, competing=competing), feature_sizes=data.feature_sizes)
    task = task.to(device)
    optimizer = torch.optim.Adam(task.parameters(), lr=1e-2)
    clock = Clock(device)
    loader = data.train_dataloader()
    iterator = iter(loader)
    next(iterator)  # the day's load is a one-off per day, not a per-step cost
    samples, requests_seen, done = 0, 0, 0
    wall = {"load": 0.0, "forward": 0.0, "backward": 0.0}
    cpu = dict.fromkeys(wall, 0.0)
    while done < steps:
        started = clock()
        try:
            batch = _to(next(iterator), device)
        except StopIteration:
            iterator = iter(loader)
            continue
        loaded = clock()
        optimizer.zero_grad()
        loss = task.training_step(batch, done)
        forwarded = clock()
        loss.backward()
        optimizer.step()
        finished = clock()
        for phase, (begin, end) in {"load": (started, loaded), "forward": (loaded, forwarded)}.items():
            wall[phase] += end[0] - begin[0]
            cpu[phase] += end[1] - begin[1]
        wall["backward"] += finished[0] - forwarded[0]
        cpu["backward"] += finished[1] - forwarded[1]
        samples += len(batch["label"])
        requests_seen += len(batch["user"])
        done += 1
    candidates = data.test_dataloader()[1]
    list(zip(range(1), candidates, strict=False))  # load the test day
    requests, batches = 0, 0
    eval_wall, eval_cpu = {"load": 0.0, "score": 0.0}, {"load": 0.0, "score": 0.0}
    task.eval()
    with torch.inference_mode():
        started = clock()
        for batch in candidates:
            batch = _to(batch, device)
            loaded = clock()
            task.network.score_candidates(batch)
            scored = clock()
            eval_wall["load"] += loaded[0] - started[0]
            eval_wall["score"] += scored[0] - loaded[0]
            eval_cpu["load"] += loaded[1] - started[1]
            eval_cpu["score"] += scored[1] - loaded[1]
            requests += len(batch["request_id"])
            batches += 1
            started = clock()
    return {
        "train_samples_per_s": round(samples / sum(wall.values()), 1),
        "train_samples_per_cpu_s": round(samples / sum(cpu.values()), 1),
        "train_requests_per_batch": round(requests_seen / steps, 1),
        "train_load_ms": round(1000 * wall["load"] / steps, 1),
        "train_forward_ms": round(1000 * wall["forward"] / steps, 1),
        "train_backward_ms": round(1000 * wall["backward"] / steps, 1),
        "eval_requests_per_s": round(requests / sum(eval_wall.values()), 1),
        "eval_requests_per_cpu_s": round(requests / sum(eval_cpu.values()), 1),
        "eval_load_ms": round(1000 * eval_wall["load"] / batches, 1),
        "eval_score_ms": round(1000 * eval_wall["score"] / batches, 1),
    }


def measure_all(args: argparse.Namespace, store: Path) -> dict[str, dict[str, float]]:
    """Every selected network, once."""
    torch.manual_seed(0)
    return {name: measure(store, name, args.steps, args.batch_size, args.device) for name in args.only}


def _child(args: argparse.Namespace, store: Path, checkout: Path | None) -> dict[str, dict[str, float]]:
    """:func:`measure_all` in a child process importing stcrank from ``checkout`` (this one when None)."""
    env = dict(os.environ)
    if checkout is not None:
        paths = [str(checkout), str(checkout / "plugins"), env.get("PYTHONPATH", "")]
        env["PYTHONPATH"] = os.pathsep.join(path for path in paths if path)
    command = [sys.executable, __file__, "--child", str(store), "--steps", str(args.steps)]
    command += ["--batch-size", str(args.batch_size), "--device", args.device, "--only", *args.only]
    command += ["--wait-policy", args.wait_policy]
    if args.threads is not None:
        command += ["--threads", str(args.threads)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"benchmark child ({checkout or 'this checkout'}) failed:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _best(runs: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """The best (largest) of each headline figure over repeated runs; other figures from the best run."""
    out = {}
    for name in runs[0]:
        best = max(runs, key=lambda run: run[name]["eval_requests_per_s"])[name]
        out[name] = dict(best) | {key: max(run[name][key] for run in runs) for key in HEADLINE}
    return out


def compare(args: argparse.Namespace, store: Path) -> dict:
    """This checkout against ``--baseline``, alternating child processes."""
    runs: dict[str, list] = {"this": [], "baseline": []}
    for _ in range(args.repeats):
        runs["this"].append(_child(args, store, None))
        runs["baseline"].append(_child(args, store, args.baseline))
    this, baseline = _best(runs["this"]), _best(runs["baseline"])
    ratio = {name: {key: round(this[name][key] / baseline[name][key], 2) for key in HEADLINE} for name in this}
    return {"this": this, "baseline": baseline, "this_over_baseline": ratio}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=None, help="where the release and store go (reused)")
    parser.add_argument("--users", type=int, default=600)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--only", nargs="+", default=list(NETWORKS), choices=NETWORKS, help="networks to run")
    parser.add_argument("--baseline", type=Path, default=None, help="another stcrank checkout to compare with")
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs of each side with --baseline")
    parser.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    add_common_arguments(parser)
    args = parse_arguments(parser)
    apply_threads(args.threads)
    check_device(args.device)
    if args.child is not None:  # one measurement, printed for the parent
        print(json.dumps(measure_all(args, args.child)))
        return
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="stcrank-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    store = ensure_store(workdir, args.users)
    if args.baseline is not None:
        run = lambda: compare(args, store)  # noqa: E731
        headline = lambda figures: {f"{n}.{k}": figures["this"][n][k] for n in args.only for k in HEADLINE}  # noqa: E731
    else:
        run = lambda: measure_all(args, store)  # noqa: E731
        headline = lambda figures: {f"{n}.{k}": figures[n][k] for n in args.only for k in HEADLINE}  # noqa: E731
    report = {
        "store": str(store),
        "batch_size": args.batch_size,
        "steps": args.steps,
        "baseline": str(args.baseline) if args.baseline else None,
        "machine": machine(args),
        "results": under_loads(run, args, headline),
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
