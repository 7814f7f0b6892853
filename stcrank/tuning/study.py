"""Optuna study of ensemble weights: search space, sampler, storage, resume and worker processes.

Semantics every function here keeps:

* **Search space.** The weight of one task (the *fixed task*, the first by default) is fixed at 1: AUC and every
  ranking are invariant to a positive rescaling of the ensemble value (for the multiplicative formula, to a
  positive power). Every other task's weight ``w_<task>`` is searched on a log scale within ``bounds``.
* **Sampler.** Always pinned explicitly, because optuna's defaults change between releases:
  ``TPESampler(seed=seed, multivariate=True)`` for one objective and for several (multi-objective TPE), or
  ``NSGAIISampler(seed=seed)`` on request.
* **Storage.** ``None`` keeps the study in memory; a string with ``://`` is an RDB URL (``sqlite:///study.db``);
  anything else is a journal file, ``JournalStorage(JournalFileBackend(path, JournalFileOpenLock(path)))``.
* **Trial count.** ``n_trials`` is the number of *finished* (``COMPLETE``) trials the study should hold. A run
  starts at most the remainder, so a killed study resumes where it stopped, and several workers sharing a study
  stop together once it holds ``n_trials``; workers still running a trial then finish it, so a study shared by
  ``k`` workers ends with between ``n_trials`` and ``n_trials + k - 1`` finished trials.
"""

from __future__ import annotations

import json
import multiprocessing
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import optuna
import torch
from optuna.samplers import BaseSampler, NSGAIISampler, TPESampler
from optuna.storages import BaseStorage, RDBStorage
from optuna.study import MaxTrialsCallback
from optuna.trial import FrozenTrial, Trial, TrialState

from stcrank.errors import StcrankError
from stcrank.tuning.journal import open_journal, storage_errors
from stcrank.tuning.objectives import Objective, TuningContext, check_objective
from stcrank.tuning.predictions import read_predictions

__all__ = [
    "SearchSpace",
    "StudyMismatchError",
    "TuneSpec",
    "derive_seed",
    "finished_trials",
    "make_sampler",
    "open_storage",
    "open_study",
    "optimize",
    "run",
]

SamplerName = Literal["tpe", "nsga2"]
STUDY_ATTR = "stcrank"
"""Study user attribute holding the configuration a study was created with (checked on resume)."""
METRICS_ATTR = "metrics"
"""Trial user attribute holding the extra metrics an objective returned besides its optimised values."""


class StudyMismatchError(StcrankError, ValueError):
    """An existing study was created with another configuration than the one asked to resume it."""


@dataclass(frozen=True)
class SearchSpace:
    """Log-scale search space of ensemble weights with one task's weight fixed at 1.

    Attributes:
        tasks: Tasks whose weights form the ensemble, in order (at least two).
        fixed_task: The task whose weight is fixed at 1; the first task when None.
        bounds: Lowest and highest weight of every other task, ``0 < low < high``.
    """

    tasks: tuple[str, ...]
    fixed_task: str | None = None
    bounds: tuple[float, float] = (1e-3, 1e3)

    def __post_init__(self) -> None:
        object.__setattr__(self, "tasks", tuple(self.tasks))
        object.__setattr__(self, "bounds", (float(self.bounds[0]), float(self.bounds[1])))
        if len(self.tasks) < 2 or len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"tuning needs at least two distinct tasks (one weight is fixed); got {list(self.tasks)}")
        if self.fixed_task is None:
            object.__setattr__(self, "fixed_task", self.tasks[0])
        elif self.fixed_task not in self.tasks:
            raise ValueError(f"fixed task {self.fixed_task!r} is not one of the tasks {list(self.tasks)}")
        low, high = self.bounds
        if not 0 < low < high < float("inf"):
            raise ValueError(f"weight bounds must satisfy 0 < low < high < inf; got {self.bounds}")

    @property
    def searched(self) -> tuple[str, ...]:
        """The tasks whose weights are searched."""
        return tuple(task for task in self.tasks if task != self.fixed_task)

    @staticmethod
    def param(task: str) -> str:
        """Name of the optuna parameter holding ``task``'s weight: ``w_<task>``."""
        return f"w_{task}"

    def suggest(self, trial: Trial) -> dict[str, float]:
        """Ask ``trial`` for the searched weights; return every task's weight, in task order."""
        low, high = self.bounds
        found = {task: trial.suggest_float(self.param(task), low, high, log=True) for task in self.searched}
        return {task: 1.0 if task == self.fixed_task else found[task] for task in self.tasks}

    def weights_of(self, trial: FrozenTrial) -> dict[str, float]:
        """Every task's weight in a finished trial, in task order."""
        return {task: 1.0 if task == self.fixed_task else float(trial.params[self.param(task)]) for task in self.tasks}

    def describe(self) -> dict[str, Any]:
        """A JSON-ready description, stored with the study."""
        return {"tasks": list(self.tasks), "fixed_task": self.fixed_task, "bounds": list(self.bounds)}


def open_storage(storage: str | None) -> BaseStorage | None:
    """Open a study storage.

    Args:
        storage: None for memory; an RDB URL (contains ``://``, e.g. ``sqlite:///study.db``); else the path of a
            journal file, created with its parent folders if missing and opened with
            :func:`stcrank.tuning.journal.open_journal` (shared by several processes, safe on a full disk).

    Returns:
        The storage, or None for an in-memory study.
    """
    if storage is None:
        return None
    if "://" in storage:
        with storage_errors(storage):
            return RDBStorage(storage)
    if Path(storage).is_dir():
        raise ValueError(f"--storage {storage!r} is a folder; expected a journal file path or an RDB URL")
    return open_journal(storage)


def make_sampler(sampler: SamplerName, seed: int) -> BaseSampler:
    """Return the pinned sampler: ``TPESampler(seed=seed, multivariate=True)`` or ``NSGAIISampler(seed=seed)``.

    Multivariate TPE models the joint distribution of the weights (they interact: only their ratios matter) and,
    with several objectives, is optuna's multi-objective TPE; it finds good fronts in far fewer trials than
    NSGA-II, whose population of 50 needs several generations.
    """
    if sampler == "tpe":
        return TPESampler(seed=seed, multivariate=True)
    if sampler == "nsga2":
        return NSGAIISampler(seed=seed)
    raise ValueError(f"unknown sampler {sampler!r}; choose 'tpe' or 'nsga2'")


def derive_seed(seed: int, worker: int, finished: int) -> int:
    """Seed of the sampler of one run of one worker.

    A fresh single-process study uses ``seed`` itself, so it is reproducible. Other workers, and runs resuming
    a study that already holds trials, draw a seed from ``(seed, worker, finished)``: otherwise they would repeat
    the random start-up proposals that the first run already evaluated.
    """
    if worker == 0 and finished == 0:
        return seed
    return int(np.random.SeedSequence([seed, worker, finished]).generate_state(1)[0])


def finished_trials(study: optuna.Study) -> int:
    """Number of ``COMPLETE`` trials in the study."""
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


def open_study(
    *,
    storage: BaseStorage | None,
    study_name: str,
    names: Sequence[str],
    directions: Sequence[str],
    space: SearchSpace,
    ensemble: str,
    sampler: BaseSampler,
) -> optuna.Study:
    """Create a study, or load it if one of that name exists (``load_if_exists=True``).

    The configuration (tasks, fixed task, bounds, ensemble, objective names and directions) is stored with the
    study; loading a study created with another configuration is an error rather than a silent mix of trials.

    Raises:
        StudyMismatchError: If the existing study differs in directions or configuration.
    """
    study = optuna.create_study(
        storage=storage,
        study_name=study_name,
        directions=list(directions),
        sampler=sampler,
        load_if_exists=True,
    )
    found = [direction.name.lower() for direction in study.directions]
    if found != list(directions):
        raise StudyMismatchError(
            f"study {study_name!r} optimises {found}, not {list(directions)}; choose another --study-name"
        )
    config = json.loads(json.dumps({**space.describe(), "ensemble": ensemble, "objectives": list(names)}))
    existing = study.user_attrs.get(STUDY_ATTR)
    if existing is None:
        study.set_user_attr(STUDY_ATTR, config)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(list(names))
    elif existing != config:
        differences = {key: (existing.get(key), config[key]) for key in config if existing.get(key) != config[key]}
        raise StudyMismatchError(
            f"study {study_name!r} was created with another configuration (stored, asked): {differences}; "
            "choose another --study-name to start a new study"
        )
    return study


def optimize(study: optuna.Study, objective: Objective, space: SearchSpace, n_trials: int) -> int:
    """Run trials until the study holds ``n_trials`` finished trials (none if it already does).

    Args:
        study: The study, possibly shared with other processes.
        objective: A set-up objective whose names and directions match the study.
        space: The search space.
        n_trials: Total number of finished trials wanted in the study.

    Returns:
        The number of trials this call finished.
    """
    names = tuple(objective.names)
    remaining = n_trials - finished_trials(study)
    if remaining <= 0:
        return 0

    def trial_function(trial: Trial) -> float | tuple[float, ...]:
        result = objective.evaluate(space.suggest(trial))
        missing = [name for name in names if name not in result]
        if missing:
            raise ValueError(f"objective {type(objective).__name__} returned no value for {missing}")
        extras = {key: float(value) for key, value in result.items() if key not in names}
        if extras:
            trial.set_user_attr(METRICS_ATTR, extras)  # one storage write for all extra metrics
        values = tuple(float(result[name]) for name in names)
        return values[0] if len(values) == 1 else values

    done: list[int] = []

    def count(_: optuna.Study, trial: FrozenTrial) -> None:
        if trial.state == TrialState.COMPLETE:
            done.append(trial.number)

    study.optimize(
        trial_function,
        n_trials=remaining,
        callbacks=[MaxTrialsCallback(n_trials, states=(TrialState.COMPLETE,)), count],
    )
    return len(done)


@dataclass(frozen=True)
class TuneSpec:
    """Everything a worker process needs to join a tuning study (picklable: sent to spawned workers).

    Attributes:
        objective: The objective, not yet set up.
        space: The search space.
        ensemble: ``stcrank.ensembles`` plugin name.
        n_trials: Total finished trials wanted in the study.
        predictions: Cached-predictions file, or None.
        storage: Storage string (see :func:`open_storage`), or None for memory.
        study_name: Name of the study in the storage.
        sampler: ``"tpe"`` or ``"nsga2"``.
        seed: Base seed (see :func:`derive_seed`).
        torch_threads: Torch intra-op threads of every worker process (``torch.set_num_threads``); left as they
            are when None. A trial is a handful of small vectorised operations, for which one thread is the
            fastest: more threads mostly add synchronisation, and stall badly on a busy machine. Scale out with
            workers instead.
        verbosity: optuna log level for the workers.
    """

    objective: Objective
    space: SearchSpace
    ensemble: str
    n_trials: int
    predictions: str | None = None
    storage: str | None = None
    study_name: str = "stcrank-tune"
    sampler: SamplerName = "tpe"
    seed: int = 0
    torch_threads: int | None = None
    verbosity: int = field(default_factory=optuna.logging.get_verbosity)


def _run_one(spec: TuneSpec, worker: int, storage: BaseStorage | None) -> tuple[optuna.Study, int]:
    previous = torch.get_num_threads()
    if spec.torch_threads is not None:
        torch.set_num_threads(spec.torch_threads)
    try:
        cached = read_predictions(spec.predictions, spec.space.tasks) if spec.predictions is not None else None
        objective = spec.objective
        objective.setup(TuningContext(tasks=spec.space.tasks, ensemble=spec.ensemble, predictions=cached))
        check_objective(objective)
        study = open_study(
            storage=storage,
            study_name=spec.study_name,
            names=objective.names,
            directions=objective.directions,
            space=spec.space,
            ensemble=spec.ensemble,
            sampler=make_sampler(spec.sampler, spec.seed),
        )
        seed = derive_seed(spec.seed, worker, finished_trials(study))
        if seed != spec.seed:
            study.sampler = make_sampler(spec.sampler, seed)
        return study, optimize(study, objective, spec.space, spec.n_trials)
    finally:
        torch.set_num_threads(previous)  # a caller's process keeps its own setting


def _worker_main(spec: TuneSpec, worker: int, results: Any) -> None:
    optuna.logging.set_verbosity(spec.verbosity)
    with storage_errors(spec.storage):
        _, ran = _run_one(spec, worker, open_storage(spec.storage))
    results.put((worker, ran))


@dataclass(frozen=True)
class RunResult:
    """Outcome of :func:`run`.

    Attributes:
        study: The study, reloaded after every worker stopped.
        objective: The objective as set up in this process.
        ran: Trials finished by this run's processes, per worker index.
    """

    study: optuna.Study
    objective: Objective
    ran: dict[int, int]


def run(spec: TuneSpec, workers: int = 1) -> RunResult:
    """Tune with ``workers`` processes sharing one study: this one and ``workers - 1`` spawned ones.

    Other machines or shells can join the same study at any time by running with the same storage and study
    name; every worker stops once the study holds ``spec.n_trials`` finished trials.

    Args:
        spec: The study and objective to run.
        workers: Number of processes, at least 1. More than one needs a storage (journal file or RDB URL).

    Returns:
        The study, the set-up objective and the trials each worker finished.

    Raises:
        ValueError: If ``workers < 1``, or ``workers > 1`` with an in-memory study.
        RuntimeError: If a spawned worker failed.
        stcrank.io.OutputError: If the storage cannot take the study's writes (a full disk); run again once
            there is space: the study resumes.
        stcrank.tuning.journal.JournalError: If the journal holds a damaged line.
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if workers > 1 and spec.storage is None:
        raise ValueError("several workers share a study through its storage: give --storage (a journal file path)")
    # Children are spawned before this process sets the objective up, so they receive it un-set-up.
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    children = [context.Process(target=_worker_main, args=(spec, index, results)) for index in range(1, workers)]
    for child in children:
        child.start()
    try:
        with storage_errors(spec.storage):
            storage = open_storage(spec.storage)
            study, ran_here = _run_one(spec, 0, storage)
    except BaseException:
        for child in children:
            child.terminate()
        raise
    finally:
        for child in children:
            child.join()
    failed = [index for index, child in enumerate(children, start=1) if child.exitcode != 0]
    if failed:
        codes = [children[index - 1].exitcode for index in failed]
        raise RuntimeError(f"tuning worker(s) {failed} failed with exit code(s) {codes}; see their error output")
    ran = {0: ran_here}
    for _ in children:
        worker, count = results.get(timeout=60)
        ran[worker] = count
    if storage is not None:
        with storage_errors(spec.storage):
            study = optuna.load_study(study_name=spec.study_name, storage=storage)
    return RunResult(study=study, objective=spec.objective, ran=ran)


def describe_storage(storage: str | None) -> str:
    """Human-readable storage description for reports."""
    if storage is None:
        return "memory"
    return storage if "://" in storage else f"journal {storage}"


def study_config(study: optuna.Study) -> Mapping[str, Any]:
    """The configuration stored with a study by :func:`open_study`."""
    return study.user_attrs.get(STUDY_ATTR, {})
