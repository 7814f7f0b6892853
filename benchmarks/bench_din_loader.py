"""DIN training throughput through the real data module versus the same model on pre-materialised batches.

The difference is the loader's overhead (gathering a batch from the cached day, collate), reported as a share of
the step time; the target is under 10%. Prints one JSON object (``--load both``: idle and with a competing busy
loop, and the ratio busy / idle).

    python benchmarks/bench_din_loader.py [--workdir DIR] [--users 600] [--steps 30] [--threads N]
        [--load idle|busy|both]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from bench_ranking_models import ensure_store
from harness import add_common_arguments, apply_threads, machine, parse_arguments, under_loads

from stcrank.data.recflow.datamodule import RecFlowDataModule
from stcrank.models.din import DIN
from stcrank.tasks.ranking import RankingTask


def _steps(task: RankingTask, batches, steps: int) -> float:
    optimizer = torch.optim.Adam(task.parameters(), lr=1e-2)
    samples, started = 0, time.perf_counter()
    for step, batch in zip(range(steps), batches, strict=False):
        optimizer.zero_grad()
        task.training_step(batch, step).backward()
        optimizer.step()
        samples += len(batch["label"])
    return samples / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=None, help="where the release and store go (reused)")
    parser.add_argument("--users", type=int, default=600)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=1024)
    add_common_arguments(parser, device=False)
    args = parse_arguments(parser)
    apply_threads(args.threads)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="stcrank-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    store = ensure_store(workdir, args.users)
    data = RecFlowDataModule(
        str(store), batch_size=args.batch_size, train_days=[RecFlowDataModule(str(store)).train_days[0]]
    )

    def measure() -> dict:
        torch.manual_seed(0)
        task = RankingTask(network=lambda sizes: DIN(sizes), feature_sizes=data.feature_sizes)
        loader = data.train_dataloader()
        first = iter(loader)
        next(first)  # load the day once (a per-day cost, not a per-step one)

        def loader_batches():
            while True:
                yield from loader

        # Loader time alone, on the cached day.
        started, n = time.perf_counter(), 0
        for _, batch in zip(range(args.steps), loader_batches(), strict=False):
            n += len(batch["label"])
        loader_only = n / (time.perf_counter() - started)
        materialised = [batch for _, batch in zip(range(args.steps), loader_batches(), strict=False)]
        _steps(task, materialised[:2], 2)  # warm-up
        # Alternate the two measurements and keep the best of each: the machine may be shared.
        through_loader = pre = 0.0
        for _ in range(3):
            through_loader = max(through_loader, _steps(task, loader_batches(), args.steps))
            pre = max(pre, _steps(task, materialised, args.steps))
        return {
            "loader_only_samples_per_s": round(loader_only, 1),
            "through_datamodule_samples_per_s": round(through_loader, 1),
            "pre_materialised_samples_per_s": round(pre, 1),
            "loader_overhead_share_of_step": round(1 - through_loader / pre, 4),
            "loader_share_of_step_from_loader_only": round(pre / loader_only, 4),
        }

    def headline(figures: dict) -> dict:
        return {key: value for key, value in figures.items() if key.endswith("samples_per_s")}

    report = {
        "batch_size": args.batch_size,
        "steps": args.steps,
        "machine": machine(args),
        "results": under_loads(measure, args, headline),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
