"""``stcrank report stcrank``: the STCRank MOC tables (paper Tables 3-5) reproduced in the simulator.

For every row of the report config (``configs/reports/stcrank.yaml``) the pipeline is: simulate logs (once,
shared) -> fit the row's experiment config -> predict the validation split (cached predictions) -> tune the
ensemble weights where the row says so (``stcrank tune``'s study on those predictions) -> build the policy
(model predictions, ensemble, optional re-ranker). All policies are then served in the same simulator world on
the same sessions (common random numbers), and each table compares row B with row A in the paper's layout: A,
B, change, and paired deltas with standard errors. Each paper direction (spec section 5) is checked: it holds
when the paired delta has the expected sign with ``|z| >= 2``.

Rows may name a ``reranker`` and an ``e_policy``: the MSC rows (F-stage look-ahead re-ranking, E-stage
cross-stage look-ahead). A row's ``e_policy`` may name a trained E-stage model by its experiment config
(``predictor: {config: ...}``), fitted once on the same logs. Tables and directions with ``stage: explore`` are
computed on whole homepage visits (each row served with its ``e_policy``); the others on F sessions. Tables of
``kind`` ``category_gain``, ``depth_at_purchase``, ``hit_rate`` and ``beam_gap`` are the MSC analyses
(:mod:`stcrank.reports.msc`).
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

from stcrank.reports.msc import TABLE_KINDS
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
        e_policy: Optional homepage policy spec (explore-stage tables); ``predictor.config`` (absolute path) names
            an E-stage experiment config fitted by the report.
        ensemble_of: Serve the ensemble of this earlier row (its fixed or tuned weights).
    """

    id: str
    config: Path
    ensemble: dict[str, float] | None = None
    tune: dict[str, Any] | None = None
    reranker: Any = None
    e_policy: dict[str, Any] | None = None
    ensemble_of: str | None = None


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
        if sum(key in entry for key in ("ensemble", "tune", "ensemble_of")) != 1:
            raise ValueError(f"{path}: row {entry['id']!r} needs exactly one of 'ensemble', 'tune' and 'ensemble_of'")
        if "ensemble_of" in entry and entry["ensemble_of"] not in [r.id for r in rows]:
            raise ValueError(f"{path}: row {entry['id']!r}: ensemble_of names no earlier row: {entry['ensemble_of']!r}")
        config = (path.parent / entry["config"]).resolve()
        if not config.is_file():
            raise ValueError(f"{path}: row {entry['id']!r}: config {config} not found")
        e_policy = _resolve_e_policy(path, entry)
        rows.append(
            RowSpec(
                id=str(entry["id"]),
                config=config,
                ensemble={k: float(v) for k, v in entry["ensemble"].items()} if "ensemble" in entry else None,
                tune=dict(entry["tune"]) if "tune" in entry else None,
                reranker=entry.get("reranker"),
                e_policy=e_policy,
                ensemble_of=entry.get("ensemble_of"),
            )
        )
    ids = [row.id for row in rows]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path}: row ids must be unique, got {ids}")
    tables = list(raw.get("tables") or [])
    directions = list(raw.get("directions") or [])
    for table in tables:
        kind = table.get("kind", "comparison")
        if kind not in TABLE_KINDS:
            raise ValueError(f"{path}: table {table.get('name')!r}: kind must be one of {TABLE_KINDS}, got {kind!r}")
        if table.get("stage", "focus") not in ("focus", "explore"):
            raise ValueError(f"{path}: table {table.get('name')!r}: stage must be 'focus' or 'explore'")
    paired = [c for t in tables for c in _table_items(t) if "kind" not in c] + directions
    analyses = [t for t in tables if t.get("kind", "comparison") != "comparison"]
    for item in paired + analyses:
        needs_baseline = item.get("kind") in (None, "comparison", "category_gain", "depth_at_purchase")
        for key in ("row", "baseline") if needs_baseline else ("row",):
            if item.get(key) not in ids:
                raise ValueError(f"{path}: {item} names unknown row {item.get(key)!r} (rows: {ids})")
    return ReportConfig(rows, tables, directions)


def _resolve_e_policy(path: Path, entry: Mapping[str, Any]) -> dict[str, Any] | None:
    """The row's E-policy spec with its predictor's experiment config made absolute (relative to the report)."""
    spec = entry.get("e_policy")
    if spec is None:
        return None
    spec = dict(spec)
    predictor = dict(spec.get("predictor") or {})
    if "config" in predictor:
        config = (path.parent / predictor["config"]).resolve()
        if not config.is_file():
            raise ValueError(f"{path}: row {entry['id']!r}: e_policy predictor config {config} not found")
        predictor["config"] = config
        spec["predictor"] = predictor
    return spec


def _table_items(table: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The (row, baseline) items a table names: its comparisons, or the table itself for the MSC analyses."""
    if table.get("kind", "comparison") == "comparison":
        return list(table.get("comparisons", []))
    return [table]


def _stage_rows(config: ReportConfig, stage: str) -> list[str]:
    """Rows named by the tables and directions of one stage, in row order."""
    named = {
        item[key]
        for table in config.tables
        if table.get("stage", "focus") == stage
        for item in _table_items(table)
        for key in ("row", "baseline")
        if key in item
    }
    named |= {d[key] for d in config.directions if d.get("stage", "focus") == stage for key in ("row", "baseline")}
    return [row.id for row in config.rows if row.id in named]


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


def _evaluation_of(evaluation: Evaluation | Mapping[str, Evaluation], stage: str) -> Evaluation:
    return evaluation if isinstance(evaluation, Evaluation) else evaluation[stage]


def build_tables(evaluation: Evaluation | Mapping[str, Evaluation], config: ReportConfig) -> list[dict[str, Any]]:
    """Every configured comparison as numbers: A and B means, change, paired delta, SE and z per metric.

    Args:
        evaluation: One evaluation, or one per stage (``"focus"``, ``"explore"``) for tables with a ``stage``.
        config: The report config; a table's ``metrics`` (default :data:`TABLE_METRICS`) picks its columns.
            Tables of the MSC analysis kinds are skipped here (see :func:`build_msc_tables`).

    Returns:
        One dict per comparison table.
    """
    tables = []
    for table in config.tables:
        if table.get("kind", "comparison") != "comparison":
            continue
        stage = table.get("stage", "focus")
        metrics = list(table.get("metrics", TABLE_METRICS))
        comparisons = []
        for c in table.get("comparisons", []):
            ev = _evaluation_of(evaluation, stage)
            cells = {m: _delta_cell(ev, c["row"], c["baseline"], m) for m in metrics}
            comparisons.append({"row": c["row"], "baseline": c["baseline"], "change": c.get("change", ""), **cells})
        tables.append(
            {
                "name": table["name"],
                "title": table.get("title", table["name"]),
                "stage": stage,
                "metrics": metrics,
                "comparisons": comparisons,
            }
        )
    return tables


def check_directions(evaluation: Evaluation | Mapping[str, Evaluation], config: ReportConfig) -> list[dict[str, Any]]:
    """Each paper direction with its paired delta, SE, z and verdict (holds / not significant / reversed)."""
    out = []
    for d in config.directions:
        cell = _delta_cell(_evaluation_of(evaluation, d.get("stage", "focus")), d["row"], d["baseline"], d["metric"])
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
        metrics = list(table.get("metrics", TABLE_METRICS))
        unit = "visit (E + F)" if table.get("stage") == "explore" else "session"
        lines += [f"### {table['title']}", ""]
        header = "| B | A | change | " + " | ".join(metrics) + " |"
        lines += [header, "|---|---|---|" + "---:|" * len(metrics)]
        for c in table["comparisons"]:
            cells = [_pct(c[m]["relative"], c[m]["relative_se"]) for m in metrics]
            lines.append(f"| {c['row']} | {c['baseline']} | {c['change']} | " + " | ".join(cells) + " |")
        lines += ["", f"Absolute per-{unit} values (A -> B, paired delta ± SE):", ""]
        lines += ["| B | A | " + " | ".join(metrics) + " |", "|---|---|" + "---:|" * len(metrics)]
        for c in table["comparisons"]:
            cells = [
                f"{c[m]['a']:.4g} -> {c[m]['b']:.4g} ({c[m]['delta']:+.3g} ± {c[m]['delta_se']:.2g})" for m in metrics
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
            missing_sources = {r.ensemble_of for r in report_config.rows if r.id in keep and r.ensemble_of} - keep
            if missing_sources:
                raise ValueError(f"rows {sorted(keep)} take the ensemble of rows {sorted(missing_sources)}: add them")
            report_config = ReportConfig(
                [r for r in report_config.rows if r.id in keep],
                [
                    {**t, "comparisons": [c for c in t["comparisons"] if {c["row"], c["baseline"]} <= keep]}
                    for t in report_config.tables
                    if t.get("kind", "comparison") == "comparison"
                ]
                + [
                    t
                    for t in report_config.tables
                    if t.get("kind", "comparison") != "comparison" and {t["row"], t.get("baseline", t["row"])} <= keep
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
            formula = (row.tune or {}).get("ensemble", "linear")
            if row.tune is not None:
                print(f"[{row.id}] tune ensemble weights ({row.tune.get('objective', 'sum_auc')})", flush=True)
                tuned = _tune(row, cli.model, predictions, data_path, preset, seed)
                info["tune"] = tuned
                weights = tuned["weights"]
            elif row.ensemble_of is not None:
                weights, formula = dict(row_info[row.ensemble_of]["ensemble"]), row_info[row.ensemble_of]["formula"]
                info["ensemble_of"] = row.ensemble_of
            else:
                weights = dict(row.ensemble or {})
            info["ensemble"], info["formula"] = weights, formula
            e_policy = _fit_e_policy(row, data_path, root, preset, trained, info)
            if row.reranker is not None:
                info["reranker"] = row.reranker
            row_info[row.id] = info
            specs.append(
                {
                    "name": row.id,
                    "predictor": ModelPredictor(cli.model),
                    "ensemble": build_ensemble({"name": formula, "weights": weights}),
                    "reranker": build_reranker(row.reranker),
                    "e_policy": e_policy,
                }
            )
        evaluations = _evaluate_stages(data_path, specs, report_config, preset.sessions, seed, stage)
        tables = build_tables(evaluations, report_config)
        directions = check_directions(evaluations, report_config)
        msc_tables = _msc_tables(data_path, specs, evaluations, report_config, preset, seed)
        result = {
            "preset": "quick" if quick else "full",
            "sizes": preset.__dict__,
            "seed": seed,
            "stage": stage,
            "data": str(data_path),
            "rows": row_info,
            "evaluation": {name: ev.to_dict(baseline=ev.policies[0]) for name, ev in evaluations.items()},
            "tables": tables,
            "msc_tables": msc_tables,
            "directions": directions,
            "seconds": time.perf_counter() - started,
        }
        (root / "report.json").write_text(json.dumps(result, indent=2, default=str))
        (root / "report.md").write_text(_markdown(result))
        print(_markdown(result))
        return result
    finally:
        torch.set_num_threads(previous_threads)


def _fit_e_policy(
    row: RowSpec, data: Path, root: Path, preset: Preset, trained: dict[str, Any], info: dict[str, Any]
) -> dict[str, Any] | None:
    """The row's E-policy spec, with an E-stage model named by its config fitted (once per config) on the logs."""
    spec = dict(row.e_policy) if row.e_policy is not None else None
    predictor = dict((spec or {}).get("predictor") or {})
    if spec is None or "config" not in predictor or "checkpoint" in predictor:
        return spec
    config = Path(predictor["config"])
    key = json.dumps(yaml.safe_load(config.read_text()), sort_keys=True)
    if key not in trained:
        row_dir = root / "rows" / f"{row.id}-E"
        row_dir.mkdir(parents=True, exist_ok=True)
        print(f"[{row.id}] fit E-stage model {config.name} ({preset.epochs} epochs)", flush=True)
        cli = _fit(RowSpec(id=f"{row.id}-E", config=config), data, row_dir, preset, row_dir / "train.log")
        metrics = {k: float(v) for k, v in cli.trainer.callback_metrics.items() if k.startswith("val/")}
        trained[key] = (cli, None, metrics)
    cli, _, metrics = trained[key]
    info["e_model"] = {"config": str(config), "val": metrics}
    spec["predictor"] = {"model": cli.model}
    return spec


def _evaluate_stages(
    data: Path, specs: list[dict[str, Any]], config: ReportConfig, sessions: int, seed: int, stage: str
) -> dict[str, Evaluation]:
    """Serve the rows each stage needs: F sessions for focus tables, homepage visits for explore tables."""
    if stage == "explore":
        print(f"serving {len(specs)} arms on {sessions} homepage visits each", flush=True)
        return {"explore": _evaluate(data, specs, sessions, seed, "explore")}
    explore_rows = set(_stage_rows(config, "explore"))
    focus_rows = set(_stage_rows(config, "focus")) | {s["name"] for s in specs if s["name"] not in explore_rows}
    out = {}
    for name, rows in (("focus", focus_rows), ("explore", explore_rows)):
        chosen = [s for s in specs if s["name"] in rows]
        if chosen:
            unit = "F sessions" if name == "focus" else "homepage visits"
            print(f"serving {len(chosen)} policies on {sessions} {unit} each", flush=True)
            out[name] = _evaluate(data, chosen, sessions, seed, name)
    return out


def _msc_tables(
    data: Path,
    specs: list[dict[str, Any]],
    evaluations: Mapping[str, Evaluation],
    config: ReportConfig,
    preset: Preset,
    seed: int,
) -> list[dict[str, Any]]:
    """The MSC analysis tables (category gain, depth at purchase, Hit@K, beam gap to exact)."""
    from stcrank.data.eshop.reader import read_manifest
    from stcrank.data.eshop.synth import explore_config_of, load_world
    from stcrank.reports import msc
    from stcrank.simulation.model_policy import build_reranker

    wanted = [t for t in config.tables if t.get("kind", "comparison") != "comparison"]
    if not wanted:
        return []
    manifest = read_manifest(data)
    world, focus_config = load_world(manifest), explore_config_of(manifest).focus
    by_name = {s["name"]: s for s in specs}
    recorded: dict[str, tuple[Any, Any]] = {}
    out = []
    for table in wanted:
        kind, row = table["kind"], table["row"]
        entry = {"name": table["name"], "title": table.get("title", table["name"]), "kind": kind, "row": row}
        if kind in ("category_gain", "depth_at_purchase"):
            evaluation = evaluations[table.get("stage", "focus")]
            entry["baseline"] = table["baseline"]
            if kind == "category_gain":
                involvement = world.involvement.tolist()
                entry["rows"] = msc.category_gain_table(evaluation, row, table["baseline"], involvement)
            else:
                entry["rows"] = msc.depth_at_purchase_table(evaluation, row, table["baseline"])
        else:
            requests = int(table.get("requests", 1000))
            if row not in recorded:
                spec = by_name[row]
                recorded[row] = msc.record_requests(
                    world, spec["predictor"], spec["ensemble"], sessions=requests, seed=seed + 7, config=focus_config
                )
            value, continue_prob = recorded[row]
            rerankers = {name: build_reranker(r) for name, r in dict(table.get("rerankers") or {}).items()}
            if "exact" not in rerankers:
                rerankers["exact"] = build_reranker("exact")
            ks = table.get("ks")
            entry["analysis"] = msc.rerank_analysis(value, continue_prob, focus_config.page_size, rerankers, ks=ks)
        out.append(entry)
    return out


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
    arms = {s["name"]: (build_e_policy(s["e_policy"], seed, data), policies[s["name"]]) for s in specs}
    return evaluate_explore(world, arms, visits=sessions, seed=seed, config=explore_config)


def _markdown(result: Mapping[str, Any]) -> str:
    sizes = result["sizes"]
    lines = [
        "# STCRank MOC and MSC tables (simulator)",
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
        aucs = ", ".join(
            f"{k.removeprefix('val/')}={v:.3f}" for k, v in info["val"].items() if "auc" in k and "_excluded" not in k
        )
        weights = ", ".join(f"{k}={v:.3g}" for k, v in info["ensemble"].items())
        tuned = " (tuned)" if "tune" in info else ""
        lines.append(f"| {name} | {aucs} | {weights}{tuned} |")
    lines += ["", "## Tables", "", tables_markdown(result["tables"])]
    if result.get("msc_tables"):
        from stcrank.reports.msc import msc_table_markdown

        lines += ["## MSC analyses", "", *[msc_table_markdown(t) for t in result["msc_tables"]]]
    lines += ["## Paper directions", ""]
    lines += [directions_markdown(result["directions"]), ""]
    return "\n".join(lines)
