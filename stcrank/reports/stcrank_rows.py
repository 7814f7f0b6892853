"""Train one seed's rows of ``stcrank report stcrank``: fit, predict the validation split, tune, build the policies.

Every distinct experiment config is fitted once per training seed (rows whose configs differ only in comments
share the fit: MOC-3 is the SDR-3 model), with ``--seed_everything SEED`` and the data module's ``seed`` (the
training shuffle), so the same seed gives the same model and every row of one seed starts from the same seed.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from stcrank.errors import ConfigError
from stcrank.reports.runner import data_init_parameters


def fit_args(config: Path, data: Path, out: Path, preset: Any, seed: int) -> list[str]:
    """The ``stcrank fit`` arguments of one row and seed (the preset's sizes override the config's)."""
    network = [f"--model.init_args.network.init_args.{k}={json.dumps(v)}" for k, v in preset.network.items()]
    seeded = [f"--data.init_args.seed={seed}"] if "seed" in (data_init_parameters(config) or ()) else []
    return [
        "fit",
        "-c",
        str(config),
        f"--data.root={data}",
        f"--seed_everything={seed}",
        *seeded,
        f"--trainer.default_root_dir={out}",
        # Training logs and checkpoints stay in the row's folder.
        f"--trainer.logger.init_args.save_dir={out}",
        f"--trainer.max_epochs={preset.epochs}",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        *network,
        *([f"--data.batch_size={preset.batch_size}"] if preset.batch_size else []),
        *([f"--model.init_args.lr={preset.lr}"] if preset.lr else []),
    ]


def _fit(config: Path, data: Path, out: Path, preset: Any, seed: int, log: Path) -> Any:
    """Fit a config through the ``stcrank fit`` command line; return the CLI (trained model and data)."""
    from stcrank.commands.lightning import main

    with open(log, "a") as stream, contextlib.redirect_stdout(stream), contextlib.redirect_stderr(stream):
        return main(fit_args(config, data, out, preset, seed))


def _predict_validation(cli: Any, path: Path, log: Path) -> Path:
    from stcrank.tasks.multitask import write_prediction_batches

    with open(log, "a") as stream, contextlib.redirect_stdout(stream), contextlib.redirect_stderr(stream):
        batches = cli.trainer.predict(cli.model, datamodule=cli.datamodule)
    return write_prediction_batches(path, batches, cli.model.tasks)


def _val_metrics(cli: Any) -> dict[str, float]:
    return {k: float(v) for k, v in cli.trainer.callback_metrics.items() if k.startswith("val/")}


def tune(row: Any, model: Any, predictions: Path, data: Path, preset: Any, seed: int) -> dict[str, Any]:
    """Tune a row's ensemble weights on its cached validation predictions; return the weights and trial values."""
    import optuna

    from stcrank.tuning.objectives import SumAucObjective
    from stcrank.tuning.report import choose_trial
    from stcrank.tuning.simulated import SimulatedOutcomes
    from stcrank.tuning.study import SearchSpace, TuneSpec, run

    settings = dict(row.tune or {})
    tasks = tuple(model.tasks)
    space = SearchSpace(tasks, fixed_task=settings.get("fixed_task", "cvr"), bounds=(1e-3, 1e2))
    name = settings.get("objective", "sum_auc")
    if name == "sum_auc":
        objective = SumAucObjective()
    elif name == "simulated":
        sessions = max(2, preset.sessions // 4)
        objective = SimulatedOutcomes(
            str(data), predictor={"model": model}, sessions=sessions, seed=seed + 1, mode="purchases"
        )
    else:
        raise ConfigError(f"row {row.id!r}: tune.objective must be 'sum_auc' or 'simulated', got {name!r}")
    trials = min(int(settings.get("n_trials", preset.tune_trials)), preset.tune_trials)
    spec = TuneSpec(
        objective=objective,
        space=space,
        ensemble=settings.get("ensemble", "linear"),
        n_trials=trials,
        predictions=str(predictions),
        seed=seed,
        torch_threads=1,
    )
    previous = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per trial would drown the report's progress
    try:
        result = run(spec)
    finally:
        optuna.logging.set_verbosity(previous)
    chosen = choose_trial(result.study)
    return {"objective": name, "trials": trials, "weights": space.weights_of(chosen), "values": list(chosen.values)}


def train_rows(
    rows: list[Any], data: Path, root: Path, preset: Any, seed: int, say: Callable[[str], None]
) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]], dict[str, float]]:
    """Fit, predict and tune every row for one training seed and build its serving spec.

    Args:
        rows: The report's rows (:class:`~stcrank.reports.stcrank.RowSpec`).
        data: The simulated log directory.
        root: The seed's output folder (one sub-folder per row).
        preset: The report's sizes.
        seed: The training seed.
        say: Progress printer.

    Returns:
        The serving specs (``name``, ``predictor``, ``ensemble``, ``reranker``, ``e_policy``, ``truth``), the
        rows' info (validation metrics, served ensemble, tuning) and the seconds spent fitting and tuning.
    """
    from stcrank.simulation.model_policy import ModelPredictor, build_ensemble, build_reranker

    trained: dict[str, Any] = {}
    specs: list[dict[str, Any]] = []
    info_by_row: dict[str, dict[str, Any]] = {}
    seconds = {"fit": 0.0, "tune": 0.0}
    for row in rows:
        row_dir = root / row.id
        row_dir.mkdir(parents=True, exist_ok=True)
        log = row_dir / "train.log"
        key = json.dumps(yaml.safe_load(row.config.read_text()), sort_keys=True)
        if key not in trained:
            say(f"[seed {seed}] [{row.id}] fit {row.config.name} ({preset.epochs} epochs)")
            started = time.perf_counter()
            cli = _fit(row.config, data, row_dir, preset, seed, log)
            # Read the validation metrics before predicting: the predict loop resets the trainer's metrics.
            metrics = _val_metrics(cli)
            predictions = _predict_validation(cli, row_dir / "val_predictions.parquet", log)
            seconds["fit"] += time.perf_counter() - started
            trained[key] = (cli, predictions, metrics)
        cli, predictions, metrics = trained[key]
        info: dict[str, Any] = {"config": str(row.config), "val": metrics}
        formula = (row.tune or {}).get("ensemble", "linear")
        if row.tune is not None:
            say(f"[seed {seed}] [{row.id}] tune ensemble weights ({row.tune.get('objective', 'sum_auc')})")
            started = time.perf_counter()
            tuned = tune(row, cli.model, predictions, data, preset, seed)
            seconds["tune"] += time.perf_counter() - started
            info["tune"] = tuned
            weights = tuned["weights"]
        elif row.ensemble_of is not None:
            weights, formula = dict(info_by_row[row.ensemble_of]["ensemble"]), info_by_row[row.ensemble_of]["formula"]
            info["ensemble_of"] = row.ensemble_of
        else:
            weights = dict(row.ensemble or {})
        info["ensemble"], info["formula"] = weights, formula
        started = time.perf_counter()
        e_policy = _fit_e_policy(row, data, root, preset, seed, trained, info, say)
        seconds["fit"] += time.perf_counter() - started
        if row.reranker is not None:
            info["reranker"] = row.reranker
        info_by_row[row.id] = info
        specs.append(
            {
                "name": row.id,
                "predictor": ModelPredictor(cli.model),
                "ensemble": build_ensemble({"name": formula, "weights": weights}),
                "reranker": build_reranker(row.reranker),
                "e_policy": e_policy,
                "truth": row.truth,
            }
        )
    return specs, info_by_row, seconds


def _fit_e_policy(
    row: Any,
    data: Path,
    root: Path,
    preset: Any,
    seed: int,
    trained: dict[str, Any],
    info: dict[str, Any],
    say: Callable[[str], None],
) -> dict[str, Any] | None:
    """The row's E-policy spec, with an E-stage model named by its config fitted (once per config) on the logs."""
    spec = dict(row.e_policy) if row.e_policy is not None else None
    predictor = dict((spec or {}).get("predictor") or {})
    if spec is None or "config" not in predictor or "checkpoint" in predictor:
        return spec
    config = Path(predictor["config"])
    key = json.dumps(yaml.safe_load(config.read_text()), sort_keys=True)
    if key not in trained:
        row_dir = root / f"{row.id}-E"
        row_dir.mkdir(parents=True, exist_ok=True)
        say(f"[seed {seed}] [{row.id}] fit E-stage model {config.name} ({preset.epochs} epochs)")
        cli = _fit(config, data, row_dir, preset, seed, row_dir / "train.log")
        trained[key] = (cli, None, _val_metrics(cli))
    cli, _, metrics = trained[key]
    info["e_model"] = {"config": str(config), "val": metrics}
    spec["predictor"] = {"model": cli.model}
    return spec
