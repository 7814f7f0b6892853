"""The paired comparisons of ``stcrank report stcrank`` over training seeds: tables, directions and Markdown.

Each training seed's rows are served on that seed's evaluation sessions (common random numbers across the rows),
and every comparison (row B against row A on a metric) gives one paired difference per seed
(:func:`seed_cells`). The per-seed relative changes are combined by :func:`~stcrank.reports.power.combine_seeds`
(total uncertainty from their spread, small-sample t, minimum detectable effect), and every paper direction gets
a verdict (:func:`~stcrank.reports.power.verdict`).

The estimator of a metric is its closed-form expectation (``expected_<metric>`` of the evaluation, see
:mod:`stcrank.simulation.expectation`) where the simulator has one, else the sampled outcome; the sampled
outcome's change is kept beside it as a check, with the ratio of the two standard errors on the same sessions
(the variance reduction).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any, Literal

from stcrank.reports.power import VERDICTS, CombinedEffect, combine_seeds, verdict
from stcrank.reports.stats import mean, sample_std, seeds_needed
from stcrank.simulation.evaluation import Evaluation, expected_metric

Estimator = Literal["expected", "sampled"]
TABLE_METRICS: tuple[str, ...] = ("purchases", "ipv", "depth", "gmv", "return_prob")
"""Metrics of the MOC tables (per F session; ``return_prob`` is the return-rate proxy for DAU)."""

SEEDS_NEEDED_LIMIT = 1000
"""Above this many seeds, a direction's paper effect counts as out of reach."""
ComparisonKey = tuple[str, str, str, str]
"""``(stage, row, baseline, metric)``."""
SeedEvaluations = Mapping[str, Evaluation]
"""One seed's evaluations by stage (``focus``, ``explore``)."""


def _stage_of(item: Mapping[str, Any]) -> str:
    return str(item.get("stage", "focus"))


def comparison_keys(
    tables: Sequence[Mapping[str, Any]], directions: Sequence[Mapping[str, Any]]
) -> list[ComparisonKey]:
    """Every ``(stage, row, baseline, metric)`` the comparison tables and the directions need, in order."""
    keys: list[ComparisonKey] = []
    for table in tables:
        if table.get("kind", "comparison") != "comparison":
            continue
        for c in table.get("comparisons", []):
            for metric in table.get("metrics", TABLE_METRICS):
                keys.append((_stage_of(table), c["row"], c["baseline"], metric))
    keys += [(_stage_of(d), d["row"], d["baseline"], d["metric"]) for d in directions]
    return list(dict.fromkeys(keys))


def seed_cells(
    evaluations: SeedEvaluations, keys: Sequence[ComparisonKey], estimator: Estimator = "expected"
) -> dict[ComparisonKey, dict[str, Any]]:
    """One seed's paired comparisons: the estimator's and the sampled outcome's, on the same sessions.

    Args:
        evaluations: The seed's evaluation per stage.
        keys: The comparisons (stages missing from ``evaluations`` are skipped).
        estimator: ``expected`` (closed form where the simulator has one) or ``sampled``.

    Returns:
        Key -> ``{"metric": the evaluation metric used, "estimate": PairedDelta fields, "sampled": ...}``.
    """
    out = {}
    for key in keys:
        stage, row, baseline, metric = key
        evaluation = evaluations.get(stage)
        if evaluation is None:
            continue
        available = list(evaluation.metrics[row])
        used = expected_metric(metric, available) if estimator == "expected" else metric
        out[key] = {
            "metric": used,
            "estimate": asdict(evaluation.compare(row, baseline, used)),
            "sampled": asdict(evaluation.compare(row, baseline, metric)),
        }
    return out


def _as_seed_list(evaluation: Evaluation | SeedEvaluations | Sequence[SeedEvaluations]) -> list[SeedEvaluations]:
    if isinstance(evaluation, Evaluation):
        return [{"focus": evaluation, "explore": evaluation}]
    if isinstance(evaluation, Mapping):
        return [evaluation]
    return list(evaluation)


def combine_cell(per_seed: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Combine one comparison's per-seed cells into its table cell.

    Args:
        per_seed: The comparison's cells from :func:`seed_cells`, one per seed.

    Returns:
        ``a`` and ``b`` (baseline and row means over seeds), ``delta`` and ``delta_se`` (absolute, combined),
        ``relative``, ``relative_se``, ``df``, ``p_value``, ``mde`` and ``z`` (relative, combined over seeds),
        ``within_se`` and ``between_sd`` (the evaluation's and the training's parts), ``per_seed`` (relative
        changes), ``training_counted``, ``estimated_as`` (the evaluation metric used), ``sampled`` (the sampled
        outcome's combined relative change and SE) and ``se_ratio`` (mean over seeds of the sampled outcome's
        paired SE over the estimator's, same sessions: the variance reduction).
    """
    est = [c["estimate"] for c in per_seed]
    sampled = [c["sampled"] for c in per_seed]
    relative = combine_seeds([e["relative"] for e in est], [e["relative_se"] for e in est])
    absolute = combine_seeds([e["delta"] for e in est], [e["delta_se"] for e in est])
    sampled_relative = combine_seeds([s["relative"] for s in sampled], [s["relative_se"] for s in sampled])
    ratios = [s["relative_se"] / e["relative_se"] for s, e in zip(sampled, est, strict=True) if e["relative_se"] > 0]
    return {
        "estimated_as": per_seed[0]["metric"],
        "a": mean([e["mean_b"] for e in est]),
        "b": mean([e["mean_a"] for e in est]),
        "delta": absolute.effect,
        "delta_se": absolute.se,
        **_relative_fields(relative),
        "sampled": {"relative": sampled_relative.effect, "relative_se": sampled_relative.se},
        "se_ratio": mean(ratios) if ratios else math.nan,
    }


def _relative_fields(c: CombinedEffect) -> dict[str, Any]:
    d = c.to_dict()
    return {
        "relative": c.effect,
        "relative_se": c.se,
        "df": d["df"],
        "p_value": c.p_value,
        "mde": c.mde,
        "z": c.t,
        "within_se": c.within_se,
        "between_sd": c.between_sd,
        "per_seed": list(c.per_seed),
        "training_counted": c.training_counted,
        "seeds": c.seeds,
    }


def _combined(cells: Sequence[Mapping[ComparisonKey, Mapping[str, Any]]], key: ComparisonKey) -> dict[str, Any]:
    return combine_cell([seed[key] for seed in cells])


def _cells_of(
    evaluation: Evaluation | SeedEvaluations | Sequence[SeedEvaluations] | None,
    cells: Sequence[Mapping[ComparisonKey, Mapping[str, Any]]] | None,
    keys: Sequence[ComparisonKey],
    estimator: Estimator,
) -> Sequence[Mapping[ComparisonKey, Mapping[str, Any]]]:
    if cells is not None:
        return cells
    if evaluation is None:
        raise ValueError("give the evaluations or their per-seed cells")
    return [seed_cells(seed, keys, estimator) for seed in _as_seed_list(evaluation)]


def build_tables(
    evaluation: Evaluation | SeedEvaluations | Sequence[SeedEvaluations] | None,
    config: Any,
    *,
    cells: Sequence[Mapping[ComparisonKey, Mapping[str, Any]]] | None = None,
    estimator: Estimator = "expected",
) -> list[dict[str, Any]]:
    """Every configured comparison table, each cell combined over the training seeds.

    Args:
        evaluation: One evaluation, one per stage, or a list of those (one per training seed); or None with
            ``cells``.
        config: The report config (its ``tables``); a table's ``metrics`` (default :data:`TABLE_METRICS`) picks
            its columns. Tables of the MSC analysis kinds are skipped here.
        cells: Per-seed cells from :func:`seed_cells` instead of ``evaluation``.
        estimator: ``expected`` or ``sampled`` (with ``evaluation``).

    Returns:
        One dict per comparison table (cells from :func:`combine_cell`).
    """
    keys = comparison_keys(config.tables, [])
    cells = _cells_of(evaluation, cells, keys, estimator)
    tables = []
    for table in config.tables:
        if table.get("kind", "comparison") != "comparison":
            continue
        stage = _stage_of(table)
        metrics = list(table.get("metrics", TABLE_METRICS))
        comparisons = []
        for c in table.get("comparisons", []):
            if any((stage, c["row"], c["baseline"], m) not in cells[0] for m in metrics):
                continue
            combined = {m: _combined(cells, (stage, c["row"], c["baseline"], m)) for m in metrics}
            comparisons.append({"row": c["row"], "baseline": c["baseline"], "change": c.get("change", ""), **combined})
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


def check_directions(
    evaluation: Evaluation | SeedEvaluations | Sequence[SeedEvaluations] | None,
    config: Any,
    *,
    cells: Sequence[Mapping[ComparisonKey, Mapping[str, Any]]] | None = None,
    estimator: Estimator = "expected",
) -> list[dict[str, Any]]:
    """Each paper direction with its combined change, MDE and four-way verdict.

    Args:
        evaluation: As for :func:`build_tables`.
        config: The report config (its ``directions``; each may give ``paper_effect``, the paper's relative
            change, e.g. ``0.0053`` for +0.53%).
        cells: Per-seed cells instead of ``evaluation``.
        estimator: ``expected`` or ``sampled`` (with ``evaluation``).

    Returns:
        One dict per direction: the direction's fields, the cell of :func:`combine_cell`, ``verdict`` (one of
        :data:`~stcrank.reports.power.VERDICTS`) and ``seeds_needed``: the seeds whose MDE would reach the paper's
        effect at the per-seed spread measured here (None with one seed, without a paper effect, or above
        :data:`SEEDS_NEEDED_LIMIT`).
    """
    keys = comparison_keys([], config.directions)
    cells = _cells_of(evaluation, cells, keys, estimator)
    out = []
    for d in config.directions:
        key = (_stage_of(d), d["row"], d["baseline"], d["metric"])
        if key not in cells[0]:
            continue
        cell = _combined(cells, key)
        within = [c[key]["estimate"]["relative_se"] for c in cells]
        combined = combine_seeds(cell["per_seed"], within)
        paper = None if d.get("paper_effect") is None else float(d["paper_effect"])
        needed = None
        if paper and combined.training_counted:
            # One seed's SD, floored at the evaluation noise as the SE is (see stcrank.reports.power).
            sd = max(sample_std(cell["per_seed"]), math.sqrt(mean([se * se for se in within])))
            needed = seeds_needed(sd, paper, at_most=SEEDS_NEEDED_LIMIT)
        out.append({**d, **cell, "verdict": verdict(combined, d["expect"], paper), "seeds_needed": needed})
    return out


def pct(value: float, se: float | None = None, digits: int = 2) -> str:
    """``+1.23% ± 0.45`` (or ``+1.23%``); ``n/a`` for NaN."""
    if value is None or math.isnan(value):
        return "n/a"
    text = f"{100 * value:+.{digits}f}%"
    return text if se is None or math.isnan(se) else f"{text} ± {100 * se:.{digits}f}"


def _mde(cell: Mapping[str, Any]) -> str:
    return "n/a" if math.isnan(cell["mde"]) else f"{100 * cell['mde']:.2f}%"


def tables_markdown(tables: Sequence[Mapping[str, Any]]) -> str:
    """The comparison tables: relative change ± total SE and the MDE per metric, then the absolute values."""
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
            cells = [f"{pct(c[m]['relative'], c[m]['relative_se'])} (MDE {_mde(c[m])})" for m in metrics]
            lines.append(f"| {c['row']} | {c['baseline']} | {c['change']} | " + " | ".join(cells) + " |")
        lines += ["", f"Absolute per-{unit} values (A -> B, mean over seeds; paired delta ± SE):", ""]
        lines += ["| B | A | " + " | ".join(metrics) + " |", "|---|---|" + "---:|" * len(metrics)]
        for c in table["comparisons"]:
            cells = [
                f"{c[m]['a']:.4g} -> {c[m]['b']:.4g} ({c[m]['delta']:+.3g} ± {c[m]['delta_se']:.2g})" for m in metrics
            ]
            lines.append(f"| {c['row']} | {c['baseline']} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def directions_markdown(directions: Sequence[Mapping[str, Any]]) -> str:
    """The direction checks: change ± total SE, MDE, the paper's effect, per-seed changes, the check, verdict."""
    lines = [
        "| paper direction | metric | B vs A | change ± SE | MDE | paper | per seed | training SD | seeds needed "
        "| sampled (check) | SE ratio | verdict |",
        "|---|---|---|---:|---:|---:|---|---:|---:|---:|---:|---|",
    ]
    for d in directions:
        paper = d.get("paper_effect")
        paper_text = "n/a" if paper is None else pct(float(paper) * (1 if d["expect"] == "up" else -1), digits=2)
        per_seed = ", ".join(f"{100 * v:+.1f}" for v in d["per_seed"])
        between = "n/a" if math.isnan(d["between_sd"]) else f"{100 * d['between_sd']:.2f}%"
        sampled = d["sampled"]
        needed = d.get("seeds_needed")
        if needed is None:
            needed = f"> {SEEDS_NEEDED_LIMIT}" if d["training_counted"] and paper else "n/a"
        lines.append(
            f"| {d['claim']} | {d['metric']} | {d['row']} vs {d['baseline']} | {pct(d['relative'], d['relative_se'])} "
            f"| {_mde(d)} | {paper_text} | {per_seed} | {between} | {needed} "
            f"| {pct(sampled['relative'], sampled['relative_se'])} | {d['se_ratio']:.2f} | {d['verdict']} |"
        )
    return "\n".join(lines)


def verdict_counts(directions: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """How many directions got each verdict."""
    return {name: sum(d["verdict"] == name for d in directions) for name in VERDICTS}
