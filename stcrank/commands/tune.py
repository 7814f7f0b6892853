"""``stcrank tune``: Bayesian tuning of ensemble weights with optuna (STCRank 3.3.3).

The options and ``--help`` text come from :func:`tune`'s signature and docstring (through
:func:`jsonargparse.CLI`).
"""

from __future__ import annotations

import inspect
import json
import sys
from pathlib import Path
from typing import Any, Literal

import optuna
from jsonargparse import CLI

from stcrank.commands.help_format import PlainArgumentParser
from stcrank.registry import PluginError
from stcrank.tuning.objectives import Objective, build_ensemble, resolve_objective
from stcrank.tuning.predictions import predicted_tasks
from stcrank.tuning.report import choose_trial, ensemble_config, front, markdown_table, save_plot, trial_record
from stcrank.tuning.report import yaml_snippet as make_yaml_snippet
from stcrank.tuning.study import SearchSpace, TuneSpec, describe_storage, finished_trials, run


def tune(
    *,
    predictions: str | None = None,
    tasks: list[str] | None = None,
    fixed_task: str | None = None,
    bounds: tuple[float, float] = (1e-3, 1e3),
    ensemble: str = "linear",
    objective: Objective | str = "sum_auc",
    n_trials: int = 200,
    storage: str | None = None,
    study_name: str = "stcrank-tune",
    sampler: Literal["tpe", "nsga2"] = "tpe",
    seed: int = 0,
    workers: int = 1,
    threads: int = 1,
    out: str | None = None,
    format: Literal["table", "json"] = "table",
    verbose: bool = False,
) -> dict[str, Any]:
    """Tune the weights of an ensemble formula on cached validation predictions.

    One task's weight is fixed at 1 (rankings do not change when every weight is scaled) and the others are
    searched on a log scale. Prints the results table and the chosen weights as a YAML snippet for a config's
    ``ensemble`` key.

    Args:
        predictions: Parquet file of cached validation predictions (``pred_<task>``, ``label_<task>``,
            ``mask_<task>`` columns), as written by ``stcrank.tuning.predictions.write_predictions``.
        tasks: Tasks whose weights are tuned, e.g. ``[vtr,cvr,sdr]``; every task of the predictions file when
            omitted.
        fixed_task: Task whose weight is fixed at 1; the first of ``tasks`` when omitted.
        bounds: Lowest and highest weight of the other tasks, e.g. ``[0.001,1000]``.
        ensemble: ``stcrank.ensembles`` plugin the weights are for (``linear``, ``multiplicative``...).
        objective: ``sum_auc`` (maximise the sum of the tasks' AUCs), ``multi_auc`` (one AUC per task, Pareto
            front), or the class path of an ``stcrank.tuning.objectives.Objective`` subclass (its options as
            ``--objective.<name>``).
        n_trials: Number of finished trials the study should hold; a resumed study runs only the remainder.
        storage: Journal file path (e.g. ``study.log``) or RDB URL (``sqlite:///study.db``) keeping the study, so
            that a killed run resumes and several processes share it; in memory when omitted.
        study_name: Name of the study in the storage.
        sampler: ``tpe`` (multivariate TPE, also for several objectives) or ``nsga2``.
        seed: Sampler seed; a fresh single-process study is reproducible under it.
        workers: Processes to run, sharing the study through ``storage``.
        threads: Torch threads per process; a trial is a few small vectorised operations, fastest on one thread,
            so scale out with ``workers``.
        out: Folder for ``table.md``, ``ensemble.yaml``, ``result.json`` and the plot; nothing is written when
            omitted.
        format: Print a ``table`` with the YAML snippet, or the result as ``json``.
        verbose: Log every trial.

    Returns:
        The result as printed with ``--format json``: the study, its objectives and directions, the number of
        finished trials and of trials run now, ``trials`` (the Pareto front with several objectives, else the
        best trials; each with its weights, optimised values and extra metrics), the ``chosen`` trial, its
        ``ensemble`` config, the ``yaml`` snippet and the ``files`` written.
    """
    optuna.logging.set_verbosity(optuna.logging.INFO if verbose else optuna.logging.WARNING)
    if tasks is None:
        if predictions is None:
            raise ValueError("give --tasks, or --predictions to tune every task of the file")
        tasks = list(predicted_tasks(predictions))
    space = SearchSpace(tuple(tasks), fixed_task, bounds)
    build_ensemble(ensemble, dict.fromkeys(space.tasks, 1.0))  # fail on an unknown plugin before any trial
    if n_trials < 1 or threads < 1:
        raise ValueError(f"--n_trials and --threads must be at least 1, got {n_trials} and {threads}")
    spec = TuneSpec(
        objective=resolve_objective(objective),
        space=space,
        ensemble=ensemble,
        n_trials=n_trials,
        predictions=predictions,
        storage=storage,
        study_name=study_name,
        sampler=sampler,
        seed=seed,
        torch_threads=threads,
    )
    outcome = run(spec, workers=workers)
    study = outcome.study
    names = list(outcome.objective.names)
    records = [trial_record(trial, space, names) for trial in front(study)]
    chosen = trial_record(choose_trial(study), space, names)
    result: dict[str, Any] = {
        "study_name": study_name,
        "storage": describe_storage(storage),
        "objectives": dict(zip(names, outcome.objective.directions, strict=True)),
        "sampler": sampler,
        "seed": seed,
        "finished_trials": finished_trials(study),
        "ran": sum(outcome.ran.values()),
        "table": "pareto_front" if len(names) > 1 else "best_trials",
        "trials": records,
        "chosen": chosen,
        "ensemble": ensemble_config(ensemble, chosen["weights"]),
        "yaml": make_yaml_snippet(ensemble, chosen["weights"]),
        "files": {},
    }
    table = markdown_table(records, chosen=chosen["trial"])
    if out is not None:
        result["files"] = _write_outputs(Path(out), study, table, result)
    if format == "json":
        print(json.dumps(result, indent=2))
    else:
        print(_render_table(result, table))
    return result


def _write_outputs(folder: Path, study: optuna.Study, table: str, result: dict[str, Any]) -> dict[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    plot_name = "optimization_history.png" if len(result["objectives"]) == 1 else "pareto_front.png"
    files = {
        "table": str(folder / "table.md"),
        "yaml": str(folder / "ensemble.yaml"),
        "plot": str(save_plot(study, folder / plot_name)),
        "result": str(folder / "result.json"),
    }
    Path(files["table"]).write_text(table + "\n")
    Path(files["yaml"]).write_text(result["yaml"])
    Path(files["result"]).write_text(json.dumps({**result, "files": files}, indent=2) + "\n")
    return files


def _render_table(result: dict[str, Any], table: str) -> str:
    objectives = ", ".join(f"{name} ({direction})" for name, direction in result["objectives"].items())
    what = "Pareto front" if len(result["objectives"]) > 1 else "best trials"
    chosen = result["chosen"]
    values = ", ".join(f"{name}={value:.5f}" for name, value in chosen["values"].items())
    lines = [
        f"study {result['study_name']!r} ({result['storage']}): {result['finished_trials']} finished trials, "
        f"{result['ran']} run now; objectives {objectives}; sampler {result['sampler']}, seed {result['seed']}",
        "",
        f"{what} (* = chosen):",
        "",
        table,
        "",
        f"chosen trial {chosen['trial']}: {values}",
        "",
        "# ensemble weights for a config:",
        result["yaml"].rstrip(),
    ]
    if result["files"]:
        lines += ["", "wrote: " + ", ".join(result["files"].values())]
    return "\n".join(lines)


_OPTIONS = frozenset(inspect.signature(tune).parameters)


def _underscored(argv: list[str]) -> list[str]:
    """Accept ``--n-trials`` for ``--n_trials`` (and so on): jsonargparse names options after the parameters."""
    result = []
    for argument in argv:
        if argument.startswith("--"):
            key, equals, value = argument[2:].partition("=")
            head, dot, rest = key.partition(".")
            if head.replace("-", "_") in _OPTIONS:
                argument = f"--{head.replace('-', '_')}{dot}{rest}{equals}{value}"
        result.append(argument)
    return result


def main(argv: list[str]) -> None:
    """Run ``stcrank tune`` with the given arguments (without the program and command names).

    The result is printed, not returned: the ``stcrank`` console script passes what the command returns to
    :func:`sys.exit`, which would turn a returned object into an error exit. Call :func:`tune` for the result.
    """
    try:
        CLI(tune, args=_underscored(argv), prog="stcrank tune", parser_class=PlainArgumentParser)
    except (ValueError, PluginError) as error:
        raise SystemExit(f"stcrank tune: error: {error}") from error


if __name__ == "__main__":
    main(sys.argv[1:])
