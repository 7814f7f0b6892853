"""``stcrank report stcrank``: the STCRank MOC tables (paper Tables 3-5) reproduced in the simulator.

For every row of the report config (``configs/reports/stcrank.yaml``) the pipeline is: simulate logs (once,
shared) -> fit the row's experiment config -> predict the validation split (cached predictions) -> tune the
ensemble weights where the row says so (``stcrank tune``'s study on those predictions) -> build the policy
(model predictions, ensemble, optional re-ranker). All policies are then served in the same simulator world on
the same sessions (common random numbers), and each table compares row B with row A in the paper's layout: A,
B, change, and paired deltas with standard errors. Each paper direction (spec section 5) is checked: it holds
when the paired delta has the expected sign with ``|z| >= 2``.

Rows may name a ``reranker`` and an ``e_policy`` (with ``stage: explore`` for the whole report), the extension
point for the MSC rows (F-stage look-ahead re-ranking, E-stage cross-stage look-ahead).
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from stcrank.simulation.evaluation import Evaluation

TABLE_METRICS: tuple[str, ...] = ("purchases", "ipv", "depth", "gmv", "return_prob")
"""Metrics of the MOC tables (per F session; ``return_prob`` is the return-rate proxy for DAU)."""
Z_THRESHOLD = 2.0
DEFAULT_CONFIG = str(Path(__file__).resolve().parents[2] / "configs" / "reports" / "stcrank.yaml")


@dataclass(frozen=True)
class Preset:
    """Sizes of one report run.

    Attributes:
        users: Simulated users.
        visits: Homepage visits of the training logs.
        items: Items of the world.
        candidates: F-stage candidates per trigger.
        epochs: Training epochs per row.
        sessions: F sessions per policy in the evaluation.
        tune_trials: Trials of every tuning study (overrides the row's ``n_trials`` when smaller).
        network: Overrides of the MMoE's ``init_args`` (e.g. smaller experts in the quick preset); the row
            configs' sizes when empty.
        batch_size: Training batch size (the row config's when None).
        lr: Learning rate (the row config's when None).
    """

    users: int
    visits: int
    items: int
    candidates: int
    epochs: int
    sessions: int
    tune_trials: int
    network: dict[str, Any] = field(default_factory=dict)
    batch_size: int | None = None
    lr: float | None = None


PRESETS: dict[str, Preset] = {
    "full": Preset(
        users=5000, visits=200_000, items=20_000, candidates=200, epochs=3, sessions=20_000, tune_trials=300
    ),
    # Sized to finish all eight rows in about five minutes on 2 shared CPU cores: small logs, two epochs of
    # small batches (enough steps for the small logs), narrow experts and embeddings, and evaluation sessions
    # shared by all arms (common random numbers).
    "quick": Preset(
        users=2000,
        visits=40_000,
        items=3_000,
        candidates=100,
        epochs=2,
        sessions=12_000,
        tune_trials=30,
        network={"embedding_dim": 8, "expert_hidden": [64, 32], "tower_hidden": [32]},
        batch_size=256,
        lr=3e-3,
    ),
}


@dataclass(frozen=True)
class RowSpec:
    """One row of the report: a trained config served with an ensemble (fixed or tuned).

    Attributes:
        id: Row name (e.g. ``"MOC-1"``).
        config: Experiment config (absolute path).
        ensemble: Fixed ensemble weights (task -> weight), unless ``tune`` is given.
        tune: Tuning settings: ``objective`` (``sum_auc`` or ``simulated``), ``fixed_task``, ``n_trials``,
            ``ensemble`` (plugin name, default ``linear``).
        reranker: Optional re-ranker spec (name or ``{name, init_args}``).
        e_policy: Optional homepage policy spec (explore-stage reports).
    """

    id: str
    config: Path
    ensemble: dict[str, float] | None = None
    tune: dict[str, Any] | None = None
    reranker: Any = None
    e_policy: dict[str, Any] | None = None


@dataclass(frozen=True)
class ReportConfig:
    """The parsed report config: rows, tables and directions."""

    rows: list[RowSpec]
    tables: list[dict[str, Any]]
    directions: list[dict[str, Any]] = field(default_factory=list)


def load_report_config(path: str | Path) -> ReportConfig:
    """Read and check the report config.

    Args:
        path: The YAML file (row configs are relative to it).

    Returns:
        The config.

    Raises:
        ValueError: Naming the file and the entry at fault.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: report config not found")
    raw = yaml.safe_load(path.read_text())
    if not isinstance(raw, dict) or not isinstance(raw.get("rows"), list) or not raw["rows"]:
        raise ValueError(f"{path}: expected a mapping with a non-empty 'rows' list")
    rows = []
    for index, entry in enumerate(raw["rows"]):
        if not isinstance(entry, dict) or "id" not in entry or "config" not in entry:
            raise ValueError(f"{path}: rows[{index}] needs 'id' and 'config'")
        if ("ensemble" in entry) == ("tune" in entry):
            raise ValueError(f"{path}: row {entry['id']!r} needs exactly one of 'ensemble' and 'tune'")
        config = (path.parent / entry["config"]).resolve()
        if not config.is_file():
            raise ValueError(f"{path}: row {entry['id']!r}: config {config} not found")
        rows.append(
            RowSpec(
                id=str(entry["id"]),
                config=config,
                ensemble={k: float(v) for k, v in entry["ensemble"].items()} if "ensemble" in entry else None,
                tune=dict(entry["tune"]) if "tune" in entry else None,
                reranker=entry.get("reranker"),
                e_policy=entry.get("e_policy"),
            )
        )
    ids = [row.id for row in rows]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path}: row ids must be unique, got {ids}")
    tables = list(raw.get("tables") or [])
    directions = list(raw.get("directions") or [])
    for item in [c for t in tables for c in t.get("comparisons", [])] + directions:
        for key in ("row", "baseline"):
            if item.get(key) not in ids:
                raise ValueError(f"{path}: {item} names unknown row {item.get(key)!r} (rows: {ids})")
    return ReportConfig(rows, tables, directions)


def _fit(row: RowSpec, data: Path, out: Path, preset: Preset, log: Path) -> Any:
    """Fit a row's config through the ``stcrank fit`` command line; return the CLI (trained model and data)."""
    from stcrank.commands.lightning import main

    network = [f"--model.init_args.network.init_args.{k}={json.dumps(v)}" for k, v in preset.network.items()]
    args = [
        "fit",
        "-c",
        str(row.config),
        f"--data.root={data}",
        f"--trainer.default_root_dir={out}",
        # Training logs and checkpoints stay in the row's folder.
        f"--trainer.logger.init_args.save_dir={out}",
        f"--trainer.max_epochs={preset.epochs}",
        "--trainer.enable_progress_bar=false",
        *network,
        *([f"--data.batch_size={preset.batch_size}"] if preset.batch_size else []),
        *([f"--model.init_args.lr={preset.lr}"] if preset.lr else []),
    ]
    with open(log, "a") as stream, contextlib.redirect_stdout(stream), contextlib.redirect_stderr(stream):
        return main(args)


def _predict_validation(cli: Any, path: Path, log: Path) -> Path:
    from stcrank.tasks.multitask import write_prediction_batches

    with open(log, "a") as stream, contextlib.redirect_stdout(stream), contextlib.redirect_stderr(stream):
        batches = cli.trainer.predict(cli.model, datamodule=cli.datamodule)
    return write_prediction_batches(path, batches, cli.model.tasks)


def _tune(row: RowSpec, model: Any, predictions: Path, data: Path, preset: Preset, seed: int) -> dict[str, Any]:
    """Tune the row's ensemble weights; return the weights and the chosen trial's values."""
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
        raise ValueError(f"row {row.id!r}: tune.objective must be 'sum_auc' or 'simulated', got {name!r}")
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
    result = run(spec)
    chosen = choose_trial(result.study)
    return {"objective": name, "trials": trials, "weights": space.weights_of(chosen), "values": list(chosen.values)}


def _delta_cell(evaluation: Evaluation, row: str, baseline: str, metric: str) -> dict[str, float]:
    d = evaluation.compare(row, baseline, metric)
    return {
        "a": d.mean_b,
        "b": d.mean_a,
        "delta": d.delta,
        "delta_se": d.delta_se,
        "relative": d.relative,
        "relative_se": d.relative_se,
        "z": d.z,
    }


def build_tables(evaluation: Evaluation, config: ReportConfig) -> list[dict[str, Any]]:
    """Every configured comparison as numbers: A and B means, change, paired delta, SE and z per metric."""
    tables = []
    for table in config.tables:
        comparisons = []
        for c in table.get("comparisons", []):
            cells = {m: _delta_cell(evaluation, c["row"], c["baseline"], m) for m in TABLE_METRICS}
            comparisons.append({"row": c["row"], "baseline": c["baseline"], "change": c.get("change", ""), **cells})
        tables.append({"name": table["name"], "title": table.get("title", table["name"]), "comparisons": comparisons})
    return tables


def check_directions(evaluation: Evaluation, config: ReportConfig) -> list[dict[str, Any]]:
    """Each paper direction with its paired delta, SE, z and verdict (holds / not significant / reversed)."""
    out = []
    for d in config.directions:
        cell = _delta_cell(evaluation, d["row"], d["baseline"], d["metric"])
        sign = 1.0 if d["expect"] == "up" else -1.0
        z = cell["z"] * sign
        verdict = "holds" if z >= Z_THRESHOLD else ("reversed" if z <= -Z_THRESHOLD else "not significant")
        out.append({**d, **cell, "verdict": verdict})
    return out


def _pct(value: float, se: float) -> str:
    if math.isnan(value):
        return "n/a"
    return f"{100 * value:+.2f}% ± {100 * se:.2f}"


def tables_markdown(tables: Sequence[Mapping[str, Any]]) -> str:
    """The MOC tables in the paper layout: one line per comparison, change and relative delta ± SE per metric."""
    lines = []
    for table in tables:
        if not table["comparisons"]:
            continue
        lines += [f"### {table['title']}", ""]
        header = "| B | A | change | " + " | ".join(TABLE_METRICS) + " |"
        lines += [header, "|---|---|---|" + "---:|" * len(TABLE_METRICS)]
        for c in table["comparisons"]:
            cells = [_pct(c[m]["relative"], c[m]["relative_se"]) for m in TABLE_METRICS]
            lines.append(f"| {c['row']} | {c['baseline']} | {c['change']} | " + " | ".join(cells) + " |")
        lines += ["", "Absolute per-session values (A -> B, paired delta ± SE):", ""]
        lines += ["| B | A | " + " | ".join(TABLE_METRICS) + " |", "|---|---|" + "---:|" * len(TABLE_METRICS)]
        for c in table["comparisons"]:
            cells = [
                f"{c[m]['a']:.4g} -> {c[m]['b']:.4g} ({c[m]['delta']:+.3g} ± {c[m]['delta_se']:.2g})"
                for m in TABLE_METRICS
            ]
            lines.append(f"| {c['row']} | {c['baseline']} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def directions_markdown(directions: Sequence[Mapping[str, Any]]) -> str:
    """The direction checks as a Markdown table."""
    lines = [
        "| paper direction | metric | B vs A | delta ± SE | relative | z | verdict |",
        "|---|---|---|---:|---:|---:|---|",
    ]
    for d in directions:
        lines.append(
            f"| {d['claim']} | {d['metric']} | {d['row']} vs {d['baseline']} | {d['delta']:+.4g} ± {d['delta_se']:.2g} "
            f"| {_pct(d['relative'], d['relative_se'])} | {d['z']:+.2f} | {d['verdict']} |"
        )
    return "\n".join(lines)


def report_stcrank(
    *,
    report_config: str = DEFAULT_CONFIG,
    out: str = "runs/reports/stcrank",
    quick: bool = False,
    data: str | None = None,
    rows: list[str] | None = None,
    seed: int = 0,
    sessions: int | None = None,
    epochs: int | None = None,
    stage: Literal["focus", "explore"] = "focus",
    threads: int = 1,
) -> dict[str, Any]:
    """Reproduce the STCRank MOC tables in the simulator and check the paper's directions.

    Args:
        report_config: Report config (rows, tables, directions); the one shipped in ``configs/reports/``
            by default.
        out: Output directory: ``logs/`` (simulated logs), one folder per row (checkpoints, cached predictions,
            training log), ``report.md`` and ``report.json``.
        quick: Small preset that finishes in a few minutes on 2 CPU cores (effects then carry larger SEs).
        data: Use this existing simulated log directory instead of generating one.
        rows: Only these row ids (tables and directions that need other rows are skipped).
        seed: Seed of the logs, the tuning and the evaluation sessions.
        sessions: F sessions per policy in the evaluation (default: the preset's).
        epochs: Training epochs per row (default: the preset's).
        stage: ``focus`` evaluates F sessions; ``explore`` whole homepage visits (rows' ``e_policy`` used).
        threads: Torch intra-op threads. One is fastest for these small networks on a shared machine: more
            threads than free cores make every step wait on the others.

    Returns:
        The report as a JSON-ready dict (also written to ``report.json``).
    """
    import torch

    from stcrank.data.eshop.synth import synth_eshop
    from stcrank.simulation.model_policy import ModelPredictor, build_ensemble, build_reranker

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        started = time.perf_counter()
        preset = PRESETS["quick" if quick else "full"]
        preset = Preset(**{**preset.__dict__, **({"sessions": sessions} if sessions else {})})
        preset = Preset(**{**preset.__dict__, **({"epochs": epochs} if epochs else {})})
        report_config = load_report_config(report_config)
        if rows is not None:
            unknown = sorted(set(rows) - {r.id for r in report_config.rows})
            if unknown:
                raise ValueError(f"unknown row(s) {unknown}; the rows are {[r.id for r in report_config.rows]}")
            keep = set(rows)
            report_config = ReportConfig(
                [r for r in report_config.rows if r.id in keep],
                [
                    {**t, "comparisons": [c for c in t["comparisons"] if {c["row"], c["baseline"]} <= keep]}
                    for t in report_config.tables
                ],
                [d for d in report_config.directions if {d["row"], d["baseline"]} <= keep],
            )
        root = Path(out)
        root.mkdir(parents=True, exist_ok=True)
        if data is None:
            data_path = root / "logs"
            if not (data_path / "manifest.json").is_file():
                print(f"simulating logs: {preset.visits} visits, {preset.users} users -> {data_path}", flush=True)
                synth_eshop(
                    out=str(data_path),
                    users=preset.users,
                    sessions=preset.visits,
                    items=preset.items,
                    candidates=preset.candidates,
                    seed=seed,
                )
        else:
            data_path = Path(data)
        trained: dict[str, Any] = {}
        specs: list[dict[str, Any]] = []
        row_info: dict[str, dict[str, Any]] = {}
        for row in report_config.rows:
            row_dir = root / "rows" / row.id
            row_dir.mkdir(parents=True, exist_ok=True)
            log = row_dir / "train.log"
            # Rows whose configs differ only in comments (MOC-3 is the SDR-3 model) share one fit.
            key = json.dumps(yaml.safe_load(row.config.read_text()), sort_keys=True)
            if key not in trained:
                print(f"[{row.id}] fit {row.config.name} ({preset.epochs} epochs)", flush=True)
                cli = _fit(row, data_path, row_dir, preset, log)
                # Read the validation metrics before predicting: the predict loop resets the trainer's metrics.
                metrics = {k: float(v) for k, v in cli.trainer.callback_metrics.items() if k.startswith("val/")}
                predictions = _predict_validation(cli, row_dir / "val_predictions.parquet", log)
                trained[key] = (cli, predictions, metrics)
            cli, predictions, metrics = trained[key]
            info: dict[str, Any] = {"config": str(row.config), "val": metrics, "predictions": str(predictions)}
            if row.tune is not None:
                print(f"[{row.id}] tune ensemble weights ({row.tune.get('objective', 'sum_auc')})", flush=True)
                tuned = _tune(row, cli.model, predictions, data_path, preset, seed)
                info["tune"] = tuned
                weights = tuned["weights"]
            else:
                weights = dict(row.ensemble or {})
            info["ensemble"] = weights
            row_info[row.id] = info
            ensemble = build_ensemble({"name": (row.tune or {}).get("ensemble", "linear"), "weights": weights})
            specs.append(
                {
                    "name": row.id,
                    "predictor": ModelPredictor(cli.model),
                    "ensemble": ensemble,
                    "reranker": build_reranker(row.reranker),
                    "e_policy": row.e_policy,
                }
            )
        print(f"serving {len(specs)} policies on {preset.sessions} sessions each", flush=True)
        evaluation = _evaluate(data_path, specs, preset.sessions, seed, stage)
        tables = build_tables(evaluation, report_config)
        directions = check_directions(evaluation, report_config)
        result = {
            "preset": "quick" if quick else "full",
            "sizes": preset.__dict__,
            "seed": seed,
            "stage": stage,
            "data": str(data_path),
            "rows": row_info,
            "evaluation": evaluation.to_dict(baseline=evaluation.policies[0]),
            "tables": tables,
            "directions": directions,
            "seconds": time.perf_counter() - started,
        }
        (root / "report.json").write_text(json.dumps(result, indent=2, default=str))
        (root / "report.md").write_text(_markdown(result))
        print(_markdown(result))
        return result
    finally:
        torch.set_num_threads(previous_threads)


def _evaluate(data: Path, specs: list[dict[str, Any]], sessions: int, seed: int, stage: str) -> Evaluation:
    from stcrank.data.eshop.reader import read_manifest
    from stcrank.data.eshop.synth import explore_config_of, load_world
    from stcrank.simulation.evaluation import evaluate_explore, evaluate_focus
    from stcrank.simulation.model_policy import build_e_policy
    from stcrank.simulation.policies import ValuePolicy

    manifest = read_manifest(data)
    world, explore_config = load_world(manifest), explore_config_of(manifest)
    policies = {s["name"]: ValuePolicy(s["predictor"], s["ensemble"], s["reranker"]) for s in specs}
    if stage == "focus":
        return evaluate_focus(world, policies, sessions=sessions, seed=seed, config=explore_config.focus)
    arms = {s["name"]: (build_e_policy(s["e_policy"], seed), policies[s["name"]]) for s in specs}
    return evaluate_explore(world, arms, visits=sessions, seed=seed, config=explore_config)


def _markdown(result: Mapping[str, Any]) -> str:
    sizes = result["sizes"]
    lines = [
        "# STCRank MOC tables (simulator)",
        "",
        f"Preset `{result['preset']}`: {sizes['visits']} logged homepage visits, {sizes['epochs']} epochs per row, "
        f"{sizes['sessions']} F sessions per policy (common random numbers), seed {result['seed']}. "
        "Changes are B vs A, relative, ± SE (delta method on paired sessions).",
        "",
        "## Rows",
        "",
        "| row | val AUCs | ensemble |",
        "|---|---|---|",
    ]
    for name, info in result["rows"].items():
        aucs = ", ".join(f"{k.removeprefix('val/')}={v:.3f}" for k, v in info["val"].items() if "auc" in k)
        weights = ", ".join(f"{k}={v:.3g}" for k, v in info["ensemble"].items())
        tuned = " (tuned)" if "tune" in info else ""
        lines.append(f"| {name} | {aucs} | {weights}{tuned} |")
    lines += ["", "## Tables", "", tables_markdown(result["tables"]), "## Paper directions", ""]
    lines += [directions_markdown(result["directions"]), ""]
    return "\n".join(lines)
