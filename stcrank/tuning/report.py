"""Results of a tuning study: the chosen trial, a Markdown table, a plot file and a config snippet.

* One objective: the chosen trial is ``study.best_trial``; the table lists the best trials by value.
* Several objectives: the table is the Pareto front (``study.best_trials``). The chosen trial is the front's
  trial with the largest *normalised sum*: each objective is rescaled to ``[0, 1]`` over the front (1 = best end,
  whatever its direction) and the rescaled values are added, so objectives of different units (purchases and
  session depth) weigh alike. Ties go to the earlier trial.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from stcrank import registry
from stcrank.tuning.study import METRICS_ATTR, SearchSpace

__all__ = [
    "choose_trial",
    "ensemble_config",
    "front",
    "markdown_table",
    "save_plot",
    "trial_record",
    "yaml_snippet",
]


def _metric_names(study: optuna.Study) -> list[str]:
    return study.metric_names or [f"objective_{index}" for index in range(len(study.directions))]


def front(study: optuna.Study, limit: int = 10) -> list[FrozenTrial]:
    """The trials to report, best first.

    Args:
        study: A study with at least one finished trial.
        limit: With one objective, how many of the best trials to list.

    Returns:
        One objective: up to ``limit`` finished trials, best value first. Several: the whole Pareto front,
        ordered by normalised sum (the chosen trial first).
    """
    if len(study.directions) == 1:
        trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        sign = -1.0 if study.direction == StudyDirection.MAXIMIZE else 1.0
        return sorted(trials, key=lambda trial: (sign * trial.values[0], trial.number))[:limit]
    trials = study.best_trials
    scores = _normalised_sums(trials, study.directions)
    return [trial for _, trial in sorted(zip(scores, trials, strict=True), key=lambda pair: (-pair[0], pair[1].number))]


def _normalised_sums(trials: Sequence[FrozenTrial], directions: Sequence[StudyDirection]) -> list[float]:
    scores = [0.0] * len(trials)
    for index, direction in enumerate(directions):
        values = [trial.values[index] for trial in trials]
        low, high = min(values), max(values)
        if high == low:
            continue
        for position, value in enumerate(values):
            scaled = (value - low) / (high - low)
            scores[position] += scaled if direction == StudyDirection.MAXIMIZE else 1.0 - scaled
    return scores


def choose_trial(study: optuna.Study) -> FrozenTrial:
    """The trial whose weights are recommended (see the module docs for the rule).

    Raises:
        ValueError: If the study has no finished trial.
    """
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        raise ValueError(f"study {study.study_name!r} has no finished trial yet")
    return front(study, limit=1)[0]


def trial_record(trial: FrozenTrial, space: SearchSpace, names: Sequence[str]) -> dict[str, Any]:
    """A JSON-ready record of a finished trial: number, weights, optimised values and extra metrics."""
    return {
        "trial": trial.number,
        "weights": space.weights_of(trial),
        "values": dict(zip(names, trial.values, strict=True)),
        "metrics": dict(trial.user_attrs.get(METRICS_ATTR, {})),
    }


def _number(value: float) -> str:
    return f"{value:.6g}"


def markdown_table(records: Sequence[Mapping[str, Any]], chosen: int | None = None) -> str:
    """Render trial records (from :func:`trial_record`) as a Markdown table.

    Args:
        records: The rows, all with the same weights, values and metrics keys.
        chosen: Number of the chosen trial, marked with ``*``.

    Returns:
        The table, one line per record after the header.
    """
    if not records:
        return "(no finished trial)"
    first = records[0]
    weights, values = list(first["weights"]), list(first["values"])
    metrics = [name for name in first["metrics"] if name not in values]
    header = ["trial", *[f"w_{task}" for task in weights], *values, *metrics]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" for _ in header) + "|"]
    for record in records:
        mark = "*" if record["trial"] == chosen else ""
        cells = [f"{record['trial']}{mark}"]
        cells += [f"{record['weights'][task]:.4g}" for task in weights]
        cells += [_number(record["values"][name]) for name in values]
        cells += [_number(record["metrics"][name]) if name in record["metrics"] else "" for name in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def save_plot(study: optuna.Study, path: str | Path) -> Path:
    """Save a PNG of the study: the Pareto front with several objectives, the optimisation history with one.

    Uses optuna's matplotlib plots on the non-interactive ``Agg`` backend. With two or three objectives every
    objective is an axis; with more, the front (computed on all objectives) is drawn on the first three.

    Args:
        study: A study with at least one finished trial.
        path: The PNG file to write; parent folders are created.

    Returns:
        The written path.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only: never open a window, work without a display
    import warnings

    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as optuna_plots

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = _metric_names(study)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if len(names) == 1:
            axes = optuna_plots.plot_optimization_history(study, target_name=names[0])
        elif len(names) <= 3:
            axes = optuna_plots.plot_pareto_front(study, target_names=names)
        else:
            axes = optuna_plots.plot_pareto_front(
                study, target_names=names[:3], targets=lambda trial: list(trial.values[:3])
            )
    figure = axes.figure
    figure.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(figure)
    return path


def ensemble_config(ensemble: str, weights: Mapping[str, float]) -> dict[str, Any]:
    """The ``class_path``/``init_args`` form of an ensemble plugin with the given weights.

    The class path is the plugin's full import path, which jsonargparse resolves for an argument of type
    ``Ensemble | str`` whether or not the plugin was imported beforehand.
    """
    plugin = registry.load("ensembles", ensemble)
    return {
        "class_path": f"{plugin.__module__}.{plugin.__qualname__}",
        "init_args": {"weights": {task: float(weight) for task, weight in weights.items()}},
    }


def yaml_snippet(ensemble: str, weights: Mapping[str, float], key: str = "ensemble") -> str:
    """A YAML snippet setting config key ``key`` to the ensemble with the given weights.

    Example output::

        ensemble:
          class_path: stcrank_plugins.ensembles.linear.LinearEnsemble
          init_args:
            weights:
              vtr: 1.0
              cvr: 3.52
    """
    return yaml.safe_dump({key: ensemble_config(ensemble, weights)}, sort_keys=False, default_flow_style=False)
