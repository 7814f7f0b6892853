"""Run the training seeds of ``stcrank report stcrank``, one after the other or side by side in worker processes.

A seed is a self-contained job: fit every row with ``--seed_everything SEED``, serve the rows on the seed's own
sessions (:func:`evaluation_seed`), and keep its paired comparisons. Nothing a seed computes depends on another
seed or on the process it runs in (training is seeded, the simulator draws from hashes of its keys), so
``--workers N`` runs N seeds at once, each in its own process with ``--threads`` torch threads, and gives the
numbers of the sequential run. Workers are started with ``spawn`` (a fresh interpreter: no torch thread pool or
lock is inherited mid-state) and hand back only the seed's comparisons, row information and, for the first seed,
its evaluations and MSC analyses.
"""

from __future__ import annotations

import gc
import math
import multiprocessing
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stcrank.errors import StcrankError
from stcrank.reports.comparisons import Estimator, seed_cells

__all__ = ["EVALUATION_SEED_STRIDE", "SeedJob", "evaluation_seed", "run_seeds"]

EVALUATION_SEED_STRIDE = 7919
"""Training seed number ``i`` (0-based) of a report with seed ``s`` is served on sessions drawn with seed
``s + EVALUATION_SEED_STRIDE * (i + 1)``: every training seed has its own sessions, none shares the logs' seed."""


def evaluation_seed(seed: int, index: int) -> int:
    """The seed of the evaluation sessions of the ``index``-th training seed (see :data:`EVALUATION_SEED_STRIDE`)."""
    return seed + EVALUATION_SEED_STRIDE * (index + 1)


@dataclass(frozen=True)
class SeedJob:
    """One training seed of a report.

    Attributes:
        config: The report config (rows, tables, directions).
        data: The simulated log directory.
        root: The report's output folder (the seed writes under ``rows/seed-<seed>/``).
        preset: The report's sizes.
        seed: The report's seed (of the logs and, with ``index``, of the evaluation sessions).
        index: The training seed's position (0-based): the training seed is ``seed + index``.
        stage: ``focus`` or ``explore`` (see :func:`~stcrank.reports.stcrank.report_stcrank`).
        estimator: The outcome estimator of the comparisons.
        keys: The comparisons to compute.
    """

    config: Any
    data: Path
    root: Path
    preset: Any
    seed: int
    index: int
    stage: str
    estimator: Estimator
    keys: list[Any]

    @property
    def training_seed(self) -> int:
        """The seed of the rows' training (``--seed_everything`` and the data module's shuffle)."""
        return self.seed + self.index


def _say(line: str) -> None:
    print(line, flush=True)


def run_seed(job: SeedJob) -> dict[str, Any]:
    """Train, serve and compare one training seed; the first seed also serves its truth arms and MSC analyses.

    Returns:
        ``{"index", "cells", "info", "seconds", "first"}``: the seed's paired comparisons, the rows' information
        (validation metrics, ensembles), its timing (wall and CPU seconds) and, for the first seed, its
        evaluations and MSC tables (``None`` otherwise).
    """
    from stcrank.reports.stcrank_rows import train_rows
    from stcrank.reports.stcrank_serving import evaluate_stages, msc_tables

    seed_started, seed_cpu = time.perf_counter(), time.process_time()
    train_seed = job.training_seed
    seed_dir = job.root / "rows" / f"seed-{train_seed}"
    specs, info, seconds = train_rows(job.config.rows, job.data, seed_dir, job.preset, train_seed, _say)
    started = time.perf_counter()
    sessions_seed = evaluation_seed(job.seed, job.index)
    first = job.index == 0

    def tell(line: str) -> None:
        _say(f"[seed {train_seed}] {line}")

    evaluations = evaluate_stages(
        job.data, specs, job.config, job.preset.sessions, sessions_seed, job.stage, tell, truth_arms=first
    )
    cells = seed_cells(evaluations, job.keys, job.estimator)
    kept = None
    if first:
        analyses = msc_tables(job.data, specs, evaluations, job.config, sessions_seed)
        kept = {"evaluations": evaluations, "msc_tables": analyses}
    seconds["evaluation"] = time.perf_counter() - started
    seconds["total"] = time.perf_counter() - seed_started
    seconds["cpu"] = time.process_time() - seed_cpu
    del specs, evaluations
    gc.collect()  # the seed's models and evaluations are no longer needed
    return {"index": job.index, "cells": cells, "info": info, "seconds": seconds, "first": kept}


def _start_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def run_seeds(
    jobs: list[SeedJob],
    workers: int,
    threads: int,
    say: Callable[[str], None] = _say,
    run: Callable[[SeedJob], dict[str, Any]] = run_seed,
) -> dict[str, Any]:
    """Run every seed, ``workers`` at a time, and gather them in seed order.

    Args:
        jobs: The seeds, in order (the first one keeps its evaluations).
        workers: Seeds run at once; 1 runs them in this process.
        threads: Torch threads of each worker.
        say: Progress printer.
        run: What runs one seed (:func:`run_seed`; a module-level function, as workers import it by name).

    Raises:
        StcrankError: If a worker process died (killed, e.g. for memory).

    Returns:
        ``{"cells", "first", "rows", "seeds", "timing"}``: per-seed comparisons in seed order, the first seed's
        evaluations and MSC tables, the rows' information per training seed (with their mean validation metrics),
        the training seeds and the per-seed timing.
    """
    done: dict[int, dict[str, Any]] = {}

    def finished(result: dict[str, Any]) -> None:
        done[result["index"]] = result
        seconds = result["seconds"]
        mean_total = sum(r["seconds"]["total"] for r in done.values()) / len(done)
        left = math.ceil((len(jobs) - len(done)) / max(1, workers)) * mean_total
        say(
            f"seed {jobs[result['index']].training_seed} ({len(done)}/{len(jobs)}) done in {seconds['total']:.0f} s "
            f"(fit {seconds['fit']:.0f} s, tune {seconds['tune']:.0f} s, evaluation {seconds['evaluation']:.0f} s; "
            f"{seconds['cpu']:.0f} CPU-s); about {left:.0f} s left"
        )

    if workers <= 1 or len(jobs) == 1:
        for job in jobs:
            finished(run(job))
    else:
        context = multiprocessing.get_context("spawn")
        pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker, initargs=(threads,))
        try:
            futures = [pool.submit(run, job) for job in jobs]
            for future in as_completed(futures):
                finished(future.result())
        except BrokenProcessPool as error:
            raise StcrankError(
                f"a worker process running training seeds died ({error}); it may have been killed for memory (each "
                f"worker holds one seed's models, up to about 4 GB at the default sizes): rerun with fewer --workers"
            ) from error
        finally:
            # A seed that failed stops the report: the seeds not started yet are dropped, not run for nothing.
            pool.shutdown(wait=True, cancel_futures=True)
    ordered = [done[index] for index in range(len(jobs))]
    rows: dict[str, dict[str, Any]] = {}
    for job, result in zip(jobs, ordered, strict=True):
        for name, row_info in result["info"].items():
            rows.setdefault(name, {"seeds": {}})["seeds"][job.training_seed] = row_info
    for info in rows.values():
        info["val"] = _mean_metrics([s["val"] for s in info["seeds"].values()])
    return {
        "cells": [result["cells"] for result in ordered],
        "first": ordered[0]["first"],
        "rows": rows,
        "seeds": [job.training_seed for job in jobs],
        "timing": {"per_seed": [result["seconds"] for result in ordered], "workers": workers},
    }


def _mean_metrics(per_seed: list[Mapping[str, float]]) -> dict[str, float]:
    names = {name for metrics in per_seed for name in metrics}
    return {
        name: sum(m[name] for m in per_seed if name in m) / sum(name in m for m in per_seed) for name in sorted(names)
    }
