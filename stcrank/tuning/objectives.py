"""What a tuning trial measures: the :class:`Objective` interface, the AUC objectives and a fast exact AUC.

A trial proposes one weight per task; an objective turns those weights into named values to optimise. The
built-in objectives score the ensemble on cached validation predictions (:mod:`stcrank.tuning.predictions`):

* ``sum_auc`` (:class:`SumAucObjective`): one value, ``sum_t AUC(v, label_t)`` under each task's mask;
* ``multi_auc`` (:class:`MultiAucObjective`): one value per task, ``auc_<task>``.

Any other objective, such as purchases, IPV and depth measured by serving the ensemble in the e-shop simulator,
subclasses :class:`Objective` and is handed to the tuner unchanged (see the tuning docs).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from stcrank import registry
from stcrank.plugins import Ensemble
from stcrank.tuning.predictions import CachedPredictions

__all__ = [
    "BUILTIN_OBJECTIVES",
    "AucObjective",
    "MultiAucObjective",
    "Objective",
    "SumAucObjective",
    "TuningContext",
    "binary_auc",
    "build_ensemble",
    "check_objective",
    "resolve_objective",
]

DIRECTIONS = ("maximize", "minimize")


@dataclass(frozen=True)
class TuningContext:
    """What the tuner knows when an objective is set up.

    Attributes:
        tasks: The tasks whose weights are searched, in order; ``evaluate`` receives one weight per task.
        ensemble: The ``stcrank.ensembles`` plugin name (or class path) the weights are for.
        predictions: The cached validation predictions, or None when none were given.
    """

    tasks: tuple[str, ...]
    ensemble: str
    predictions: CachedPredictions | None = None


class Objective(ABC):
    """A tuning objective: maps the ensemble weights of one trial to named values to optimise.

    The tuner calls :meth:`setup` once per process before the first trial, then :meth:`evaluate` once per trial.
    Objectives given to several worker processes are pickled *before* :meth:`setup`, so load data in
    :meth:`setup`, not in ``__init__``.
    """

    def setup(self, context: TuningContext) -> None:  # noqa: B027 - an optional hook, empty by default
        """Prepare for evaluation (load data, build a simulator); does nothing by default.

        Args:
            context: The tasks, the ensemble name and the cached predictions of this tuning run.
        """

    @property
    @abstractmethod
    def names(self) -> tuple[str, ...]:
        """Names of the optimised values, in order (valid after :meth:`setup`)."""

    @property
    @abstractmethod
    def directions(self) -> tuple[str, ...]:
        """``"maximize"`` or ``"minimize"`` for each name (valid after :meth:`setup`)."""

    @abstractmethod
    def evaluate(self, weights: dict[str, float]) -> dict[str, float]:
        """Measure one set of ensemble weights.

        Args:
            weights: One weight per tuned task.

        Returns:
            A value for every name in :attr:`names`; further keys are recorded with the trial as extra metrics.
        """


def build_ensemble(name: str, weights: Mapping[str, float]) -> Ensemble:
    """Build an ``stcrank.ensembles`` plugin with the given weights (``registry.build(..., weights=...)``)."""
    return registry.build("ensembles", name, weights=dict(weights))


def _sorted_split_auc(positives: np.ndarray, negatives: np.ndarray) -> float:
    """AUC from the sorted scores of the positives and of the negatives."""
    # Mann-Whitney U with ties counted one half: sum over positives of #(neg < s) + 0.5 * #(neg == s).
    below = np.searchsorted(negatives, positives, side="left")
    wins = float(below.sum())
    inside = below < negatives.size
    if np.any(negatives[below[inside]] == positives[inside]):  # second search only when a tie exists
        wins += 0.5 * float((np.searchsorted(negatives, positives, side="right") - below).sum())
    return wins / (float(positives.size) * float(negatives.size))


def binary_auc(scores: Tensor | np.ndarray, labels: Tensor | np.ndarray) -> float:
    """Exact area under the ROC curve of ``scores`` against 0/1 ``labels``.

    Computed as the Mann-Whitney statistic with ties counted one half, which equals the trapezoidal ROC AUC
    (``torchmetrics``' ``binary_auroc``) exactly, ties included. Positives and negatives are sorted separately and
    counted with a vectorised binary search (a second one only when a positive ties with a negative):
    ``O(N log N)``, in float64. The sort runs in NumPy (on a zero-copy view of CPU tensors), which sorts 1-D
    float arrays several times faster than ``torch.sort`` on CPU.

    Args:
        scores: Scores, ``[N]``; larger means more likely positive.
        labels: Labels, ``[N]``, bool or 0/1.

    Returns:
        The AUC in ``[0, 1]``.

    Raises:
        ValueError: If the shapes differ, a score is NaN, or the labels hold no positive or no negative.
    """
    scores = _as_numpy(scores).astype(np.float64, copy=False)
    labels = _as_numpy(labels)
    if scores.shape != labels.shape or scores.ndim != 1:
        raise ValueError(f"scores and labels must both be 1-D of one length; got {scores.shape} and {labels.shape}")
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN")
    positive = labels.astype(bool, copy=False)
    count = int(positive.sum())
    if count == 0 or count == positive.size:
        raise ValueError(f"AUC needs positives and negatives; got {count} positives among {positive.size} labels")
    return _sorted_split_auc(np.sort(scores[positive]), np.sort(scores[~positive]))


def _as_numpy(values: Tensor | np.ndarray) -> np.ndarray:
    if isinstance(values, Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(values)


class _TaskAuc:
    """Pre-split rows of one task, so a trial only gathers, sorts and counts."""

    def __init__(self, task: str, label: Tensor, mask: Tensor, rows: Tensor, source: str) -> None:
        # Positions within the rows the ensemble is evaluated on (the union of all tasks' masks).
        local = torch.full(rows.shape, -1, dtype=torch.long)
        local[rows] = torch.arange(int(rows.sum()))
        positive, negative = mask & label, mask & ~label
        self.positives = local[positive].numpy()
        self.negatives = local[negative].numpy()
        if self.positives.size == 0 or self.negatives.size == 0:
            raise ValueError(
                f"{source}: task {task!r}: mask_{task} selects {self.positives.size} positive(s) and "
                f"{self.negatives.size} negative(s) in label_{task}; an AUC needs at least one of each"
            )

    def __call__(self, value: np.ndarray) -> float:
        return _sorted_split_auc(np.sort(value[self.positives]), np.sort(value[self.negatives]))


class AucObjective(Objective):
    """AUCs of the ensemble value against each task's labels, under each task's mask, on cached predictions.

    Base of :class:`SumAucObjective` and :class:`MultiAucObjective`; every evaluation returns ``auc_<task>`` for
    each task and ``sum_auc``.
    """

    def setup(self, context: TuningContext) -> None:
        """Pre-split the cached predictions of the tuned tasks into positives and negatives per task.

        Raises:
            ValueError: If no predictions were given, a tuned task has none, or a task's mask selects no positive
                or no negative.
        """
        cached = context.predictions
        if cached is None:
            raise ValueError(f"objective {type(self).__name__} needs cached predictions (--predictions FILE)")
        missing = [task for task in context.tasks if task not in cached.predictions]
        if missing:
            raise ValueError(f"{cached.path}: no predictions for task(s) {missing}; the file has {list(cached.tasks)}")
        self.tasks = tuple(context.tasks)
        self.ensemble_name = context.ensemble
        rows = torch.zeros(cached.num_rows, dtype=torch.bool)
        for task in self.tasks:
            rows |= cached.masks[task]
        self._predictions = {task: cached.predictions[task][rows].contiguous() for task in cached.tasks}
        self._aucs = {
            task: _TaskAuc(task, cached.labels[task], cached.masks[task], rows, str(cached.path)) for task in self.tasks
        }

    def task_aucs(self, weights: Mapping[str, float]) -> dict[str, float]:
        """Return ``{"auc_<task>": AUC}`` of the ensemble built with ``weights``.

        Raises:
            ValueError: If the ensemble produces a NaN value.
        """
        value = build_ensemble(self.ensemble_name, weights)(self._predictions)
        value = value.detach().to(torch.float64).numpy()
        if np.isnan(value).any():
            raise ValueError(f"ensemble {self.ensemble_name!r} with weights {dict(weights)} produced NaN values")
        return {f"auc_{task}": auc(value) for task, auc in self._aucs.items()}

    def evaluate(self, weights: dict[str, float]) -> dict[str, float]:
        """Return every task's AUC and their sum."""
        aucs = self.task_aucs(weights)
        return {**aucs, "sum_auc": float(sum(aucs.values()))}


class SumAucObjective(AucObjective):
    """One value to maximise: ``sum_auc``, the sum over tasks of the AUC of the ensemble value (STCRank 3.3.3)."""

    @property
    def names(self) -> tuple[str, ...]:
        """``("sum_auc",)``."""
        return ("sum_auc",)

    @property
    def directions(self) -> tuple[str, ...]:
        """``("maximize",)``."""
        return ("maximize",)


class MultiAucObjective(AucObjective):
    """One value to maximise per task: ``auc_<task>``; the tuner reports their Pareto front."""

    @property
    def names(self) -> tuple[str, ...]:
        """``auc_<task>`` for every tuned task."""
        return tuple(f"auc_{task}" for task in self.tasks)

    @property
    def directions(self) -> tuple[str, ...]:
        """``"maximize"`` for every task."""
        return ("maximize",) * len(self.tasks)


BUILTIN_OBJECTIVES: dict[str, type[Objective]] = {"sum_auc": SumAucObjective, "multi_auc": MultiAucObjective}
"""Objective short name (``--objective``) -> class."""


def resolve_objective(objective: Objective | str) -> Objective:
    """Return a built-in objective by short name, or ``objective`` itself if it is already an :class:`Objective`.

    Raises:
        ValueError: If the name is not a built-in objective.
    """
    if isinstance(objective, Objective):
        return objective
    if objective not in BUILTIN_OBJECTIVES:
        raise ValueError(
            f"unknown objective {objective!r}; built-in objectives: {', '.join(BUILTIN_OBJECTIVES)}, or give the "
            "class path of an stcrank.tuning.objectives.Objective subclass"
        )
    return BUILTIN_OBJECTIVES[objective]()


def check_objective(objective: Objective, names: Sequence[str] | None = None) -> None:
    """Check that a set-up objective declares one valid direction per distinct name.

    Raises:
        ValueError: If the names are empty or repeated, or a direction is not ``maximize``/``minimize``.
    """
    names = tuple(objective.names if names is None else names)
    directions = tuple(objective.directions)
    if not names or len(set(names)) != len(names):
        raise ValueError(f"objective {type(objective).__name__} must name distinct values; got {names}")
    if len(directions) != len(names) or any(direction not in DIRECTIONS for direction in directions):
        raise ValueError(
            f"objective {type(objective).__name__} must give one of {DIRECTIONS} per name; got {directions} for {names}"
        )
