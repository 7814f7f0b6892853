"""``stcrank report stcrank``: the STCRank MOC and MSC tables (paper Tables 3-8) reproduced in the simulator.

For every training seed and every row of the report config (``configs/reports/stcrank.yaml``) the pipeline is:
fit the row's experiment config on the simulated logs (simulated once, shared by every row and seed) -> predict
the validation split (cached predictions) -> tune the ensemble weights where the row says so -> build the policy
(model predictions, ensemble, optional re-ranker) (:mod:`stcrank.reports.stcrank_rows`). The seed's policies are
then served in the simulator on that seed's own sessions, all rows on the same ones (common random numbers,
:mod:`stcrank.reports.stcrank_serving`), and scored by the closed-form expected outcomes of every served list
(:mod:`stcrank.simulation.expectation`), the sampled outcomes kept beside them as a check.

Each comparison (row B against row A) pairs the rows by seed; its change, total standard error (training and
evaluation noise), minimum detectable effect and, for the paper's directions, the verdict (holds, reversed, no
effect larger than the MDE, underpowered) are described in :mod:`stcrank.reports.comparisons` and
:mod:`stcrank.reports.power`. Directions that do not hold get their measured cause: the same rows fed the true
probabilities (:mod:`stcrank.reports.causes`).

Rows may name a ``reranker`` and an ``e_policy``: the MSC rows (F-stage look-ahead re-ranking, E-stage
cross-stage look-ahead). A row's ``e_policy`` may name a trained E-stage model by its experiment config
(``predictor: {config: ...}``), fitted per seed on the same logs. Tables and directions with ``stage: explore``
are computed on whole homepage visits (each row served with its ``e_policy``); the others on F sessions. Tables
of ``kind`` ``category_gain``, ``depth_at_purchase``, ``hit_rate`` and ``beam_gap`` are the MSC analyses
(:mod:`stcrank.reports.msc`), computed on the first seed.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from stcrank.errors import ConfigError
from stcrank.reports.causes import TRUTH_KEYS, findings_markdown, truth_comparisons
from stcrank.reports.comparisons import (
    TABLE_METRICS,
    Estimator,
    build_tables,
    check_directions,
    comparison_keys,
    directions_markdown,
    tables_markdown,
    verdict_counts,
)
from stcrank.reports.msc import TABLE_KINDS
from stcrank.reports.power import ALPHA, POWER
from stcrank.reports.stcrank_seeds import SeedJob, evaluation_seed, run_seeds

__all__ = [
    "DEFAULT_CONFIG",
    "PRESETS",
    "TABLE_METRICS",
    "Preset",
    "ReportConfig",
    "RowSpec",
    "build_tables",
    "check_directions",
    "directions_markdown",
    "load_report_config",
    "report_stcrank",
    "tables_markdown",
]

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
        seeds: Training seeds per row (each with its own evaluation sessions).
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
    seeds: int = 1


SMALL_NETWORK: dict[str, Any] = {"embedding_dim": 8, "expert_hidden": [64, 32], "tower_hidden": [32]}
"""Narrow experts and embeddings: serving the models is most of a seed's time, and the paper's directions are
about labels, not capacity."""

PRESETS: dict[str, Preset] = {
    # Sized for power per hour (docs/reports.md): a seed's change on purchases varies by 1-2% from seed to seed,
    # mostly the evaluation noise of two trained models' rankings on 20,000 sessions (the truth arms' paired
    # noise is six times smaller) plus the training randomness, so a seed buys more precision than a larger model
    # or many more sessions. 200,000 logged visits, four epochs at 1e-3, the narrow network, 20,000 sessions per
    # seed and twenty seeds (side by side on the usable cores: 99 minutes on 2 cores).
    "full": Preset(
        users=5000,
        visits=200_000,
        items=20_000,
        candidates=200,
        epochs=4,
        sessions=20_000,
        tune_trials=300,
        network=SMALL_NETWORK,
        batch_size=1024,
        lr=1e-3,
        seeds=20,
    ),
    # A smoke run of every row on 2 CPU cores: small logs, two epochs of small batches (enough steps for the
    # small logs), the narrow network and two seeds (the fewest that count the training randomness); its
    # verdicts are mostly "underpowered".
    "quick": Preset(
        users=2000,
        visits=40_000,
        items=3_000,
        candidates=100,
        epochs=2,
        sessions=12_000,
        tune_trials=30,
        network=SMALL_NETWORK,
        batch_size=256,
        lr=3e-3,
        seeds=2,
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
        truth: What the row's labels target, for its truth arm (:func:`stcrank.reports.causes.truth_arm`):
            ``vtr_threshold`` (seconds) and ``sdr_label`` (``all``, ``filtered``, ``no_purchase``).
    """

    id: str
    config: Path
    ensemble: dict[str, float] | None = None
    tune: dict[str, Any] | None = None
    reranker: Any = None
    e_policy: dict[str, Any] | None = None
    ensemble_of: str | None = None
    truth: dict[str, Any] | None = None


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
        ConfigError: Naming the file and the entry at fault.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: report config not found")
    raw = yaml.safe_load(path.read_text())
    if not isinstance(raw, dict) or not isinstance(raw.get("rows"), list) or not raw["rows"]:
        raise ConfigError(f"{path}: expected a mapping with a non-empty 'rows' list")
    rows = []
    for index, entry in enumerate(raw["rows"]):
        if not isinstance(entry, dict) or "id" not in entry or "config" not in entry:
            raise ConfigError(f"{path}: rows[{index}] needs 'id' and 'config'")
        if sum(key in entry for key in ("ensemble", "tune", "ensemble_of")) != 1:
            raise ConfigError(f"{path}: row {entry['id']!r} needs exactly one of 'ensemble', 'tune' and 'ensemble_of'")
        if "ensemble_of" in entry and entry["ensemble_of"] not in [r.id for r in rows]:
            raise ConfigError(
                f"{path}: row {entry['id']!r}: ensemble_of names no earlier row: {entry['ensemble_of']!r}"
            )
        config = (path.parent / entry["config"]).resolve()
        if not config.is_file():
            raise ConfigError(f"{path}: row {entry['id']!r}: config {config} not found")
        e_policy = _resolve_e_policy(path, entry)
        truth = entry.get("truth")
        unknown = sorted(set(truth or {}) - set(TRUTH_KEYS)) if isinstance(truth, dict) or truth is None else None
        if unknown is None or unknown:
            raise ConfigError(
                f"{path}: row {entry['id']!r}: truth must be a mapping with keys among {list(TRUTH_KEYS)}"
            )
        rows.append(
            RowSpec(
                id=str(entry["id"]),
                config=config,
                ensemble={k: float(v) for k, v in entry["ensemble"].items()} if "ensemble" in entry else None,
                tune=dict(entry["tune"]) if "tune" in entry else None,
                reranker=entry.get("reranker"),
                e_policy=e_policy,
                ensemble_of=entry.get("ensemble_of"),
                truth=dict(truth) if truth else None,
            )
        )
    ids = [row.id for row in rows]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"{path}: row ids must be unique, got {ids}")
    tables = list(raw.get("tables") or [])
    directions = list(raw.get("directions") or [])
    for table in tables:
        kind = table.get("kind", "comparison")
        if kind not in TABLE_KINDS:
            raise ConfigError(f"{path}: table {table.get('name')!r}: kind must be one of {TABLE_KINDS}, got {kind!r}")
        if table.get("stage", "focus") not in ("focus", "explore"):
            raise ConfigError(f"{path}: table {table.get('name')!r}: stage must be 'focus' or 'explore'")
    for d in directions:
        if d.get("expect") not in ("up", "down") or "metric" not in d:
            raise ConfigError(f"{path}: direction {d.get('claim', d)!r} needs a 'metric' and 'expect: up' or 'down'")
        effect = d.get("paper_effect")
        if effect is not None and (not isinstance(effect, (int, float)) or effect < 0):
            raise ConfigError(
                f"{path}: direction {d.get('claim', d)!r}: paper_effect must be the paper's relative change as a "
                f"non-negative fraction (0.0053 for 0.53%; the sign comes from 'expect'), got {effect!r}"
            )
    paired = [c for t in tables for c in _table_items(t) if "kind" not in c] + directions
    analyses = [t for t in tables if t.get("kind", "comparison") != "comparison"]
    for item in paired + analyses:
        needs_baseline = item.get("kind") in (None, "comparison", "category_gain", "depth_at_purchase")
        for key in ("row", "baseline") if needs_baseline else ("row",):
            if item.get(key) not in ids:
                raise ConfigError(f"{path}: {item} names unknown row {item.get(key)!r} (rows: {ids})")
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
            raise ConfigError(f"{path}: row {entry['id']!r}: e_policy predictor config {config} not found")
        predictor["config"] = config
        spec["predictor"] = predictor
    return spec


def _table_items(table: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The (row, baseline) items a table names: its comparisons, or the table itself for the MSC analyses."""
    if table.get("kind", "comparison") == "comparison":
        return list(table.get("comparisons", []))
    return [table]


def _select_rows(config: ReportConfig, rows: list[str] | None) -> ReportConfig:
    """Keep these rows, and the tables and directions that need only them."""
    if rows is None:
        return config
    unknown = sorted(set(rows) - {r.id for r in config.rows})
    if unknown:
        raise ConfigError(f"--rows: unknown row(s) {unknown}; the rows are {[r.id for r in config.rows]}")
    keep = set(rows)
    missing_sources = {r.ensemble_of for r in config.rows if r.id in keep and r.ensemble_of} - keep
    if missing_sources:
        raise ConfigError(f"--rows: rows {sorted(keep)} take the ensemble of rows {sorted(missing_sources)}: add them")
    tables = [
        {**t, "comparisons": [c for c in t["comparisons"] if {c["row"], c["baseline"]} <= keep]}
        for t in config.tables
        if t.get("kind", "comparison") == "comparison"
    ]
    tables += [
        t
        for t in config.tables
        if t.get("kind", "comparison") != "comparison" and {t["row"], t.get("baseline", t["row"])} <= keep
    ]
    directions = [d for d in config.directions if {d["row"], d["baseline"]} <= keep]
    return ReportConfig([r for r in config.rows if r.id in keep], tables, directions)


def _simulated_logs(root: Path, data: str | None, preset: Preset, seed: int, say: Any) -> Path:
    """The log directory: ``data`` if given, else logs simulated (or reused) under a folder named by their sizes."""
    from stcrank.data.eshop.synth import synth_eshop

    if data is not None:
        return Path(data)
    sizes = f"u{preset.users}-v{preset.visits}-i{preset.items}-c{preset.candidates}-s{seed}"
    path = root / "logs" / sizes
    if not (path / "manifest.json").is_file():
        say(f"simulating logs: {preset.visits} visits, {preset.users} users -> {path}")
        synth_eshop(
            out=str(path),
            users=preset.users,
            sessions=preset.visits,
            items=preset.items,
            candidates=preset.candidates,
            seed=seed,
        )
    return path


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on every platform
        return os.cpu_count() or 1


def _load() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # not available on every platform
        return []


def report_stcrank(
    *,
    report_config: str = DEFAULT_CONFIG,
    out: str = "runs/reports/stcrank",
    quick: bool = False,
    data: str | None = None,
    rows: list[str] | None = None,
    seed: int = 0,
    seeds: int | None = None,
    sessions: int | None = None,
    epochs: int | None = None,
    stage: Literal["focus", "explore"] = "focus",
    estimator: Estimator = "expected",
    threads: int = 1,
    workers: int | None = None,
) -> dict[str, Any]:
    """Reproduce the STCRank tables in the simulator and give every paper direction a verdict with its power.

    Args:
        report_config: Report config (rows, tables, directions with the paper's effect sizes); the one shipped in
            configs/reports/ by default.
        out: Output directory: logs/ (simulated logs, one folder per size and seed), rows/seed-<s>/<row>/
            (checkpoints, cached predictions, training log), report.md and report.json.
        quick: Small preset, a smoke run of a few minutes on 2 CPU cores (most verdicts then "underpowered").
        data: Use this existing simulated log directory instead of generating one.
        rows: Only these row ids (tables and directions that need other rows are skipped).
        seed: Seed of the simulated logs. The training seeds are seed, seed + 1, ... (as many as --seeds); the
            i-th of them (from 0) is evaluated on its own sessions, drawn with seed + 7919 * (i + 1).
        seeds: Training seeds per row (default: the preset's). Comparisons pair rows by seed; their standard
            error comes from the spread over seeds (a single seed counts only the evaluation noise).
        sessions: F sessions (homepage visits) per policy and seed in the evaluation (default: the preset's).
        epochs: Training epochs per row (default: the preset's).
        stage: "focus" evaluates F sessions (and homepage visits for the tables and directions marked
            "stage: explore"); "explore" serves every row on whole homepage visits.
        estimator: "expected" scores each served list by its closed-form expected outcomes (much smaller
            standard errors); "sampled" by the sampled outcomes. Both are reported; this picks the verdicts'.
        threads: Torch intra-op threads. One is fastest for these small networks on a shared machine: more
            threads than free cores make every step wait on the others.
        workers: Training seeds run at once, each in its own process with ``threads`` torch threads (up to
            about 4 GB of memory each at the default sizes); the numbers are those of a sequential run. Default: as
            many as the usable CPU cores allow (cores // threads), at most the number of seeds.

    Returns:
        The report as a JSON-ready dict (also written to report.json).
    """
    import torch

    if threads < 1 or (workers is not None and workers < 1):
        raise ConfigError(f"--threads and --workers must be positive; got threads={threads}, workers={workers}")
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)

    def say(line: str) -> None:
        print(line, flush=True)

    try:
        started, cpu_started = time.perf_counter(), time.process_time()
        load_before = _load()
        preset = PRESETS["quick" if quick else "full"]
        overrides = {"sessions": sessions, "epochs": epochs, "seeds": seeds}
        preset = Preset(**{**preset.__dict__, **{k: v for k, v in overrides.items() if v is not None}})
        if preset.seeds < 1 or preset.sessions < 2 or preset.epochs < 1:
            raise ConfigError(f"--seeds, --sessions and --epochs must be positive (sessions >= 2); got {overrides}")
        workers = min(preset.seeds, workers or max(1, _usable_cpus() // threads))
        if estimator not in ("expected", "sampled"):
            raise ConfigError(f"--estimator must be 'expected' or 'sampled', got {estimator!r}")
        config = _select_rows(load_report_config(report_config), rows)
        root = Path(out)
        root.mkdir(parents=True, exist_ok=True)
        data_path = _simulated_logs(root, data, preset, seed, say)
        keys = comparison_keys(config.tables, config.directions)
        jobs = [
            SeedJob(config, data_path, root, preset, seed, index, stage, estimator, keys)
            for index in range(preset.seeds)
        ]
        if workers > 1:
            say(f"{preset.seeds} training seeds, {workers} at a time ({threads} torch thread(s) each)")
        result = run_seeds(jobs, workers, threads, say)
        cells, first, timing = result["cells"], result["first"], result["timing"]
        tables = build_tables(None, config, cells=cells)
        directions = check_directions(None, config, cells=cells)
        truths = truth_comparisons(first["evaluations"]["focus"], directions) if "focus" in first["evaluations"] else {}
        for index, direction in enumerate(directions):
            if index in truths:
                direction["truth"] = truths[index]
        timing["seconds"] = time.perf_counter() - started
        timing["cpu_seconds"] = time.process_time() - cpu_started
        if workers > 1:  # the seeds' own CPU time was spent in the workers
            timing["cpu_seconds"] += sum(s["cpu"] for s in timing["per_seed"])
        timing["threads"] = threads
        timing["load_average"] = {"start": load_before, "end": _load()}
        report = {
            "preset": "quick" if quick else "full",
            "sizes": preset.__dict__,
            "seed": seed,
            "training_seeds": result["seeds"],
            "evaluation_seeds": [evaluation_seed(seed, i) for i in range(len(result["seeds"]))],
            "stage": stage,
            "estimator": estimator,
            "alpha": ALPHA,
            "power": POWER,
            "data": str(data_path),
            "rows": result["rows"],
            "evaluation": {name: ev.to_dict(baseline=ev.policies[0]) for name, ev in first["evaluations"].items()},
            "tables": tables,
            "msc_tables": first["msc_tables"],
            "directions": directions,
            "verdicts": verdict_counts(directions),
            "timing": timing,
            "seconds": timing["seconds"],
        }
        (root / "report.json").write_text(json.dumps(report, indent=2, default=str))
        text = _markdown(report, truths)
        (root / "report.md").write_text(text)
        print(text)
        return report
    finally:
        torch.set_num_threads(previous_threads)


def _markdown(result: Mapping[str, Any], truths: Mapping[int, Any]) -> str:
    from stcrank.reports.msc import msc_table_markdown

    sizes, timing = result["sizes"], result["timing"]
    seeds = result["training_seeds"]
    per_seed = timing["per_seed"]
    mean_seed = {k: sum(s[k] for s in per_seed) / len(per_seed) for k in ("total", "fit", "tune", "evaluation")}
    load = timing["load_average"]
    workers = timing["workers"]
    lines = [
        "# STCRank MOC and MSC tables (simulator)",
        "",
        f"Preset `{result['preset']}`: {sizes['visits']} logged homepage visits, {sizes['epochs']} epochs per row, "
        f"{len(seeds)} training seeds per row ({', '.join(map(str, seeds))}), {sizes['sessions']} F sessions per "
        f"policy and seed (common random numbers across rows; each seed its own sessions), log seed "
        f"{result['seed']}. Estimator: {result['estimator']} outcomes per served list.",
        "",
        f"Wall time: {timing['seconds']:.0f} s ({mean_seed['total']:.0f} s per seed: fit {mean_seed['fit']:.0f} s, "
        f"tune {mean_seed['tune']:.0f} s, evaluation {mean_seed['evaluation']:.0f} s), {workers} seed(s) at a "
        f"time with {timing['threads']} torch thread(s) each; {timing['cpu_seconds']:.0f} CPU-seconds (close to "
        f"workers x wall time on a quiet machine; far below it when other jobs share the cores); load average "
        f"{load['start']} at the start, {load['end']} at the end.",
        "",
        "Changes are B vs A, relative: the mean over training seeds of each seed's paired change, ± its total "
        "standard error (from the spread over seeds, which holds the training randomness and the evaluation noise; "
        f"t with seeds - 1 degrees of freedom). MDE: the minimum detectable effect at {POWER:.0%} power, "
        f"{ALPHA:g} two-sided.",
        "",
        "## Rows",
        "",
        "| row | val AUCs (mean over seeds) | ensemble (first seed) |",
        "|---|---|---|",
    ]
    for name, info in result["rows"].items():
        aucs = ", ".join(
            f"{k.removeprefix('val/')}={v:.3f}" for k, v in info["val"].items() if "auc" in k and "_excluded" not in k
        )
        first = next(iter(info["seeds"].values()))
        weights = ", ".join(f"{k}={v:.3g}" for k, v in first["ensemble"].items())
        tuned = " (tuned per seed)" if "tune" in first else ""
        lines.append(f"| {name} | {aucs} | {weights}{tuned} |")
    lines += ["", "## Paper directions", "", directions_markdown(result["directions"]), ""]
    lines += [
        "Per seed: each seed's change (%). Training SD: the estimated seed-to-seed SD of the change due to training. "
        "Seeds needed: how many seeds would bring the MDE to the paper's effect at the spread measured here. "
        "Sampled (check): the same comparison on the sampled outcomes. SE ratio: the sampled outcome's paired SE "
        "over the estimator's on the same sessions (the variance reduction of the closed form).",
        "",
        findings_markdown(result["directions"], truths),
        "## Tables",
        "",
        tables_markdown(result["tables"]),
    ]
    if result.get("msc_tables"):
        lines += ["## MSC analyses (first seed)", "", *[msc_table_markdown(t) for t in result["msc_tables"]]]
    return "\n".join(lines)
