"""Throughput of ensemble-weight tuning on cached predictions: objective evaluations and trials per second.

Single objective (sum of the three tasks' AUCs), linear ensemble, synthetic cached predictions. Prints one JSON
object (``--load both``: idle and with a competing busy loop, and the ratio busy / idle).

    python benchmarks/bench_tune.py [--rows 100000] [--n-trials 200] [--threads 1] [--load idle|busy|both]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import optuna
import torch
from harness import add_common_arguments, machine, parse_arguments, under_loads

from stcrank.tuning.objectives import SumAucObjective, TuningContext
from stcrank.tuning.predictions import read_predictions, synthetic_predictions
from stcrank.tuning.study import SearchSpace, TuneSpec, run

TASKS = ("vtr", "cvr", "sdr")


def _trials_per_second(path: str, n_trials: int, storage: str | None, threads: int) -> tuple[float, float]:
    spec = TuneSpec(
        objective=SumAucObjective(),
        space=SearchSpace(TASKS),
        ensemble="linear",
        n_trials=n_trials,
        predictions=path,
        storage=storage,
        study_name="bench",
        seed=0,
        torch_threads=threads,
    )
    start = time.perf_counter()
    outcome = run(spec)
    elapsed = time.perf_counter() - start
    return n_trials / elapsed, outcome.study.best_value


def measure(options: argparse.Namespace) -> dict:
    """The objective's evaluations and whole studies (in memory and journaled), once."""
    with tempfile.TemporaryDirectory() as folder:
        path = str(synthetic_predictions(Path(folder) / "val.parquet", rows=options.rows, seed=0))
        start = time.perf_counter()
        cached = read_predictions(path)
        load_s = time.perf_counter() - start

        objective = SumAucObjective()
        objective.setup(TuningContext(tasks=TASKS, ensemble="linear", predictions=cached))
        generator = torch.Generator().manual_seed(0)
        weights = (10 ** (torch.rand(options.evaluations, 2, generator=generator) * 6 - 3)).tolist()
        start = time.perf_counter()
        for cvr, sdr in weights:
            objective.evaluate({"vtr": 1.0, "cvr": cvr, "sdr": sdr})
        evaluations_per_s = options.evaluations / (time.perf_counter() - start)

        memory_rate, memory_best = _trials_per_second(path, options.n_trials, None, options.threads)
        journal_rate, journal_best = _trials_per_second(
            path, options.n_trials, str(Path(folder) / "study.log"), options.threads
        )
    return {
        "load_s": round(load_s, 3),
        "objective_evaluations_per_s": round(evaluations_per_s, 1),
        "trials_per_s_memory": round(memory_rate, 1),
        "trials_per_min_memory": round(60 * memory_rate),
        "trials_per_s_journal": round(journal_rate, 1),
        "best_sum_auc": round(memory_best, 5),
        "best_sum_auc_journal": round(journal_best, 5),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--n-trials", type=int, default=200)
    parser.add_argument("--evaluations", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (stcrank tune's default is 1)")
    add_common_arguments(parser, device=False, threads=False)
    options = parse_arguments(parser)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(options.threads)

    def headline(figures: dict) -> dict:
        keys = ("objective_evaluations_per_s", "trials_per_s_memory", "trials_per_s_journal")
        return {key: figures[key] for key in keys}

    print(
        json.dumps(
            {
                "benchmark": "tune_sum_auc_linear",
                "rows": options.rows,
                "tasks": len(TASKS),
                "n_trials": options.n_trials,
                "optuna": optuna.__version__,
                "machine": machine(options) | {"platform": platform.machine()},
                "results": under_loads(lambda: measure(options), options, headline),
            }
        )
    )


if __name__ == "__main__":
    main()
