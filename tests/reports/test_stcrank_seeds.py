"""Training seeds of ``report stcrank``, one after the other or in worker processes.

The functions handed to the workers live at module level: spawned workers import them by name.
"""

import os
from pathlib import Path

import pytest

from stcrank.errors import StcrankError
from stcrank.reports.stcrank_seeds import EVALUATION_SEED_STRIDE, SeedJob, evaluation_seed, run_seeds


def _jobs(count: int, seed: int = 100) -> list[SeedJob]:
    return [SeedJob(None, Path("logs"), Path("out"), None, seed, i, "focus", "expected", []) for i in range(count)]


def fake_seed(job: SeedJob) -> dict:
    """A seed's result that says which process computed it (the numbers must not depend on it)."""
    seconds = {"fit": 0.0, "tune": 0.0, "evaluation": 0.0, "total": 0.01 * job.index, "cpu": 0.0}
    info = {"A": {"val": {"val/auc": 0.5 + job.index / 100}}, "B": {"val": {"val/auc": 0.6}}}
    first = {"evaluations": {"focus": job.training_seed}, "msc_tables": []} if job.index == 0 else None
    return {"index": job.index, "cells": {"d": job.training_seed * 2}, "info": info, "seconds": seconds, "first": first}


def dying_seed(job: SeedJob) -> dict:
    if job.index == 1:
        os._exit(9)  # as a worker killed for memory
    return fake_seed(job)


@pytest.mark.parametrize("workers", [1, 3])
def test_seeds_are_gathered_in_seed_order_whoever_runs_them(workers):
    lines: list[str] = []
    result = run_seeds(_jobs(5), workers=workers, threads=1, say=lines.append, run=fake_seed)
    assert result["seeds"] == [100, 101, 102, 103, 104]
    assert result["cells"] == [{"d": 2 * s} for s in result["seeds"]]
    assert result["first"] == {"evaluations": {"focus": 100}, "msc_tables": []}
    assert list(result["rows"]["A"]["seeds"]) == result["seeds"]
    assert result["rows"]["A"]["val"]["val/auc"] == pytest.approx(0.52)
    assert result["timing"]["workers"] == workers and len(result["timing"]["per_seed"]) == 5
    assert len(lines) == 5 and lines[-1].startswith("seed ") and "(5/5)" in lines[-1] and "0 s left" in lines[-1]


def test_a_worker_that_dies_is_named_with_what_to_do():
    with pytest.raises(StcrankError, match=r"worker process running training seeds died.*rerun with fewer --workers"):
        run_seeds(_jobs(3), workers=2, threads=1, say=lambda line: None, run=dying_seed)


def test_every_training_seed_has_its_own_sessions():
    seeds = [evaluation_seed(7, i) for i in range(4)]
    assert seeds == [7 + EVALUATION_SEED_STRIDE * (i + 1) for i in range(4)]
    assert len(set(seeds)) == 4 and 7 not in seeds
    assert [job.training_seed for job in _jobs(3, seed=7)] == [7, 8, 9]
