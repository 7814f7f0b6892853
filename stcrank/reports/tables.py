"""Experiment tables: rows of per-seed results, compared with a baseline row, written as Markdown.

A :class:`Table` holds, for every row (an experiment config), the test metrics of each seed that ran. The
Markdown layout follows the paper: one row per method, one column per metric, ``mean ± std`` (sample standard
deviation over seeds) in the table's units, the best mean of each column in bold, and rows whose difference from
the baseline is significant in a two-sided paired t-test (pairs = the same seed) marked ``†↑`` (better) or
``†↓`` (worse), where better respects the metric's direction (lower LogLoss is better).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from stcrank.reports.stats import TTest, mean, paired_t_test, sample_std

__all__ = [
    "Row",
    "Table",
    "caption",
    "compare",
    "constant_metrics",
    "differences_markdown",
    "display_name",
    "format_table",
    "higher_is_better",
    "metric_label",
    "metric_scale",
]

_LOWER_IS_BETTER = re.compile(r"loss|mse|mae|rmse|error", re.IGNORECASE)
_LIST_METRIC = re.compile(r"recall|ndcg", re.IGNORECASE)
_MAX_MESSAGE = 120


@dataclass
class Row:
    """One row of a table: an experiment config and what its runs gave.

    Attributes:
        name: The row label (e.g. ``Rank_neg x1``).
        config: The experiment config, as displayed.
        runs: Test metrics of each successful run, by seed.
        failures: Error message of each failed run, by seed.
        missing: The config file does not exist (nothing could run).
        paper: The paper's value of each metric for this row, in the table's units (metrics without one left out).
    """

    name: str
    config: str
    runs: dict[int, dict[str, float]] = field(default_factory=dict)
    failures: dict[int, str] = field(default_factory=dict)
    missing: bool = False
    paper: dict[str, float] = field(default_factory=dict)

    def values(self, metric: str) -> dict[int, float]:
        """The metric's value for each seed that has it."""
        return {seed: metrics[metric] for seed, metrics in sorted(self.runs.items()) if metric in metrics}

    def summary(self, metric: str, scale: float = 1.0) -> tuple[float, float, int]:
        """``(mean, sample std, n)`` of the metric over seeds (NaN values left out), times ``scale``."""
        values = [v * scale for v in self.values(metric).values() if not math.isnan(v)]
        return mean(values), sample_std(values), len(values)

    @property
    def status(self) -> str:
        """``missing``, ``failed`` (no run succeeded), ``pending`` (nothing ran yet), ``partial`` or ``ok``."""
        if self.missing:
            return "missing"
        if not self.runs:
            return "failed" if self.failures else "pending"
        return "partial" if self.failures else "ok"


@dataclass
class Table:
    """One paper table.

    Attributes:
        key: Its key in the report config (``table2``).
        title: What it shows.
        metrics: Metric names (as logged, without ``test/``).
        baseline: The name of the row the others are compared with.
        rows: The rows, in display order.
        percent: Show Recall/NDCG metrics in percent (the paper's retrieval tables); others stay fractions.
        seeds: The seeds the table is meant to have; default the seeds any row ran or failed with. A row with
            results for fewer seeds is marked ``(n=k)``.
    """

    key: str
    title: str
    metrics: list[str]
    baseline: str
    rows: list[Row]
    percent: bool = False
    seeds: list[int] = field(default_factory=list)

    def row(self, name: str) -> Row | None:
        """The row of that name, if any."""
        return next((row for row in self.rows if row.name == name), None)

    @property
    def baseline_row(self) -> Row | None:
        """The baseline row, if the table has it."""
        return self.row(self.baseline)


def display_name(key: str) -> str:
    """``table2`` -> ``Table 2``; other keys unchanged."""
    match = re.fullmatch(r"table_?(\w+)", key, flags=re.IGNORECASE)
    return f"Table {match.group(1)}" if match else key


def higher_is_better(metric: str) -> bool:
    """False for losses and errors (``logloss``, ``mse``...), True otherwise (AUC, Recall, NDCG...)."""
    return _LOWER_IS_BETTER.search(metric) is None


def metric_scale(metric: str, percent: bool) -> float:
    """100 for a Recall/NDCG metric of a percent table, else 1."""
    return 100.0 if percent and _LIST_METRIC.search(metric) else 1.0


def metric_label(metric: str) -> str:
    """A column header: ``recflow_recall@100`` -> ``Recall@100``, ``gauc_user`` -> ``GAUC (user)``."""
    fixed = {
        "auc": "AUC",
        "logloss": "LogLoss",
        "gauc": "GAUC",
        "uauc": "UAUC",
        "gauc_user": "GAUC (user)",
        "gauc_request": "GAUC (request)",
    }
    if metric.lower() in fixed:
        return fixed[metric.lower()]
    match = re.fullmatch(r"recflow_(recall|ndcg)@(\d+)", metric)
    if match:
        return f"{'Recall' if match.group(1) == 'recall' else 'NDCG'}@{match.group(2)}"
    return metric


def compare(row: Row, other: Row, metric: str) -> TTest:
    """Paired t-test of ``row`` against ``other`` on a metric, pairing runs of the same seed.

    Seeds that only one of the rows has are left out; fewer than two pairs give a test with a NaN p-value.
    """
    mine, theirs = row.values(metric), other.values(metric)
    seeds = sorted(set(mine) & set(theirs))
    return paired_t_test([mine[s] for s in seeds], [theirs[s] for s in seeds])


def _clean(message: str) -> str:
    text = " ".join(message.split()).replace("|", "\\|")
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 1] + "…"


def _best(table: Table, metric: str) -> set[str]:
    means = {row.name: row.summary(metric)[0] for row in table.rows}
    means = {name: value for name, value in means.items() if not math.isnan(value)}
    if len(means) < 2 or len(set(means.values())) == 1:
        return set()  # nothing to single out
    target = max(means.values()) if higher_is_better(metric) else min(means.values())
    return {name for name, value in means.items() if value == target}


def _marker(test: TTest, metric: str, alpha: float) -> str:
    if not test.significant(alpha):
        return ""
    better = (test.mean_difference > 0) == higher_is_better(metric)
    return " †↑" if better else " †↓"


def _cell(table: Table, row: Row, metric: str, best: set[str], seeds: int, alpha: float, digits: int) -> str:
    centre, spread, n = row.summary(metric, metric_scale(metric, table.percent))
    if n == 0:
        return "–"
    text = f"{centre:.{digits}f}" + (f" ± {spread:.{digits}f}" if n > 1 else "")
    if row.name in best:
        text = f"**{text}**"
    baseline = table.baseline_row
    if baseline is not None and row is not baseline:
        text += _marker(compare(row, baseline, metric), metric, alpha)
    if n < seeds:
        text += f" (n={n})"
    return text


def constant_metrics(table: Table) -> list[str]:
    """The metrics that take one value in every run of every row (at least two runs).

    For example a Recall@K whose K is at least the number of candidates: such a metric cannot tell rows apart.
    """
    constant = []
    for metric in table.metrics:
        values = {v for row in table.rows for v in row.values(metric).values() if not math.isnan(v)}
        runs = sum(len(row.values(metric)) for row in table.rows)
        if runs >= 2 and len(values) == 1:
            constant.append(metric)
    return constant


def _unavailable(row: Row) -> str | None:
    if row.status == "missing":
        return "not run: config missing"
    if row.status == "pending":
        return "not run yet"
    if row.status == "failed":
        return "failed: " + _clean(next(iter(row.failures.values())))
    return None


def _seeds(table: Table) -> list[int]:
    if table.seeds:
        return sorted(table.seeds)
    return sorted({seed for row in table.rows for seed in (*row.runs, *row.failures)})


def caption(table: Table, alpha: float = 0.05) -> str:
    """The caption: what the numbers are, their units, the seeds and the meaning of the marks."""
    seeds = _seeds(table)
    units = (
        "Recall and NDCG in percent (%), other metrics as fractions"
        if table.percent
        else "all metrics as fractions (not percent)"
    )
    seed_text = f"{len(seeds)} seeds ({', '.join(map(str, seeds))})" if seeds else "no runs yet"
    return (
        f"{display_name(table.key)}: {table.title}. Mean ± sample standard deviation over {seed_text}; {units}. "
        f"**Bold**: best mean of the column. †↑ / †↓: significantly better / worse than {table.baseline} "
        f"(two-sided paired t-test over runs of the same seed, p < {alpha:g}; lower LogLoss is better). "
        "(n=k): only k seeds succeeded."
    )


def format_table(table: Table, alpha: float = 0.05, digits: int = 3) -> str:
    """The table as Markdown: the caption, then rows x metrics in the paper's layout.

    Args:
        table: The table.
        alpha: Significance level of the paired t-test against the baseline.
        digits: Decimals shown.

    Returns:
        Markdown text (caption paragraph, blank line, pipe table, trailing newline).
    """
    seeds = len(_seeds(table))
    best = {metric: _best(table, metric) for metric in table.metrics}
    header = ["Method", *(metric_label(m) for m in table.metrics)]
    lines = [caption(table, alpha), "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in table.rows:
        unavailable = _unavailable(row)
        if unavailable is not None:
            cells = [unavailable, *([""] * (len(table.metrics) - 1))]
        else:
            cells = [_cell(table, row, m, best[m], seeds, alpha, digits) for m in table.metrics]
        lines.append("| " + " | ".join([_clean(row.name), *cells]) + " |")
    notes = [
        f"- {_clean(row.name)}, seed {seed}: failed: {_clean(message)}"
        for row in table.rows
        if row.status == "partial"
        for seed, message in sorted(row.failures.items())
    ]
    if notes:
        lines += ["", "Failed runs:", "", *notes]
    constant = constant_metrics(table)
    if constant:
        names = ", ".join(metric_label(m) for m in constant)
        lines += [
            "",
            f"{names}: the same value in every run (e.g. K is at least the number of candidates to rank), so "
            f"{'it cannot' if len(constant) == 1 else 'they cannot'} tell the rows apart.",
        ]
    return "\n".join(lines) + "\n"


def differences_markdown(table: Table, alpha: float = 0.05, digits: int = 3) -> str:
    """Each row's mean difference from the baseline with its paired t-test p-value, as a Markdown table.

    Args:
        table: The table.
        alpha: Significance level (p-values below it are bold).
        digits: Decimals of the differences (in the table's units).

    Returns:
        Markdown text, or an empty string when there is no baseline result or no other row with results.
    """
    baseline = table.baseline_row
    rows = [row for row in table.rows if row is not baseline and row.runs]
    if baseline is None or not baseline.runs or not rows:
        return ""
    header = ["Method", *(metric_label(m) for m in table.metrics)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = []
        for metric in table.metrics:
            test = compare(row, baseline, metric)
            if test.n == 0:
                cells.append("–")
                continue
            difference = test.mean_difference * metric_scale(metric, table.percent)
            p = "n/a" if math.isnan(test.p_value) else f"{test.p_value:.3f}"
            p = f"**{p}**" if test.significant(alpha) else p
            cells.append(f"{difference:+.{digits}f} (p={p})")
        lines.append("| " + " | ".join([_clean(row.name), *cells]) + " |")
    return "\n".join(lines) + "\n"
