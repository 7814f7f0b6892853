"""The *Findings* of ``stcrank report recflow``: each paper finding checked with power, and the seeds it needs.

A finding rests on comparisons (a row against another on a metric, claimed higher or lower). Each comparison is
a paired t-test over seeds (pairs = runs of the same seed) with its minimum detectable effect
(:func:`~stcrank.reports.stats.minimum_detectable_effect`, 80% power, two-sided 5%) and the paper's effect for
the same pair (the paper's relative change between the two rows, from the report config's ``paper`` values), and
gets one of four verdicts: **holds** (significant in the claimed direction), **reversed** (significant against
it), **no effect larger than the MDE** (not significant while an effect as large as the paper's would have been
detected) or **underpowered** (not significant and the MDE is above the paper's effect, or the paper gives no
number). A finding holds when none of its comparisons is reversed and at least half hold; it does not hold when
none holds and at least half are adequately powered negatives (reversed or no effect larger than the MDE); it is
underpowered when none holds or is reversed and fewer than half are adequately powered; mixed otherwise.

:func:`seeds_needed_table` says, for every table, how many seeds its comparisons with the baseline need for an
MDE at the paper's effect sizes, from the spread of the per-seed differences this run measured.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from stcrank.reports.power import NO_EFFECT, UNDERPOWERED, VERDICTS
from stcrank.reports.stats import TTest, minimum_detectable_effect, sample_std, seeds_needed
from stcrank.reports.tables import Row, Table, compare, constant_metrics, display_name, metric_label, metric_scale

__all__ = [
    "ALPHA",
    "Check",
    "Finding",
    "evaluate_findings",
    "findings_markdown",
    "paper_effect",
    "seeds_needed_markdown",
    "seeds_needed_table",
]

ALPHA = 0.05

Claim = Literal["higher", "lower"]
"""What a finding claims of a row's metric against another row's."""


@dataclass(frozen=True)
class Check:
    """One comparison a finding rests on: ``row`` against ``other`` on ``metric``, claimed higher or lower.

    Attributes:
        table: Table of ``row``.
        row: The row claimed better.
        other_table: Table of ``other``.
        other: The row it is compared with.
        metric: The metric.
        claim: ``higher`` or ``lower``: what ``row`` is claimed to have.
        row_mean: Mean of ``row`` (in the table's units).
        other_mean: Mean of ``other`` (in the table's units).
        test: Paired t-test of ``row`` against ``other`` (pairs = seeds), in fractions.
        mde: Minimum detectable effect of the test, relative to ``other``'s mean (NaN with fewer than 2 pairs).
        paper_effect: The paper's relative change for the same pair and metric (None when it gives no number).
    """

    table: str
    row: str
    other_table: str
    other: str
    metric: str
    claim: Claim
    row_mean: float
    other_mean: float
    test: TTest
    mde: float = math.nan
    paper_effect: float | None = None

    @property
    def outcome(self) -> str:
        """The comparison's verdict: one of :data:`~stcrank.reports.power.VERDICTS`."""
        if self.test.significant(ALPHA):
            return "holds" if (self.test.mean_difference > 0) == (self.claim == "higher") else "reversed"
        if self.paper_effect is not None and not math.isnan(self.mde) and self.mde <= abs(self.paper_effect):
            return NO_EFFECT
        return UNDERPOWERED


@dataclass
class Finding:
    """One of the paper's findings, checked on this run's numbers.

    Attributes:
        number: Its number in the report.
        statement: What the paper found.
        checks: The comparisons it rests on.
        unavailable: Rows or tables needed but without results (and why).
    """

    number: int
    statement: str
    checks: list[Check] = field(default_factory=list)
    unavailable: list[str] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        """How many checks got each verdict (:data:`~stcrank.reports.power.VERDICTS`)."""
        outcomes = [check.outcome for check in self.checks if not math.isnan(check.test.p_value)]
        return {name: outcomes.count(name) for name in VERDICTS}

    @property
    def verdict(self) -> str:
        """The verdict on this run's numbers (see the module docstring); ``not evaluated`` without a tested pair."""
        tested = sum(self.counts.values())
        if not tested:
            return "not evaluated"
        holds, reversed_, no_effect, _ = (self.counts[name] for name in VERDICTS)
        if reversed_ == 0 and 2 * holds >= tested:
            return "holds"
        if holds == 0 and 2 * (reversed_ + no_effect) >= tested:
            return "does not hold"
        if holds == 0 and reversed_ == 0:
            return UNDERPOWERED
        return "mixed"


def _is_list_metric(metric: str) -> bool:
    return "recall" in metric or "ndcg" in metric


def paper_effect(row: Row, other: Row, metric: str) -> float | None:
    """The paper's relative change of ``row`` against ``other`` on a metric (None without both numbers)."""
    mine, theirs = row.paper.get(metric), other.paper.get(metric)
    if mine is None or theirs is None or theirs == 0:
        return None
    return mine / theirs - 1.0


def _differences(row: Row, other: Row, metric: str) -> list[float]:
    mine, theirs = row.values(metric), other.values(metric)
    return [mine[s] - theirs[s] for s in sorted(set(mine) & set(theirs)) if not math.isnan(mine[s] - theirs[s])]


def relative_mde(row: Row, other: Row, metric: str) -> float:
    """The MDE of the paired t-test of ``row`` against ``other``, relative to ``other``'s mean."""
    differences = _differences(row, other, metric)
    centre = abs(other.summary(metric)[0])
    if len(differences) < 2 or not centre:
        return math.nan
    n = len(differences)
    return minimum_detectable_effect(sample_std(differences) / math.sqrt(n), n - 1, ALPHA) / centre


def _check(table: Table, row: Row, other_table: Table, other: Row, metric: str, claim: Claim) -> Check:
    return Check(
        table=table.key,
        row=row.name,
        other_table=other_table.key,
        other=other.name,
        metric=metric,
        claim=claim,
        row_mean=row.summary(metric, metric_scale(metric, table.percent))[0],
        other_mean=other.summary(metric, metric_scale(metric, other_table.percent))[0],
        test=compare(row, other, metric),
        mde=relative_mde(row, other, metric),
        paper_effect=paper_effect(row, other, metric),
    )


class _Collector:
    """Builds a finding's checks, noting what is missing instead of failing."""

    def __init__(self, tables: dict[str, Table], finding: Finding) -> None:
        self.tables = tables
        self.finding = finding

    def table(self, key: str) -> Table | None:
        table = self.tables.get(key)
        if table is None:
            self.finding.unavailable.append(f"{display_name(key)} is not in this report")
        return table

    def row(self, table: Table, name: str) -> Row | None:
        row = table.row(name)
        if row is None:
            self.finding.unavailable.append(f"{display_name(table.key)} has no row {name!r}")
        elif not row.runs:
            why = {"missing": "config missing", "failed": "failed", "pending": "not run"}[row.status]
            self.finding.unavailable.append(f"{display_name(table.key)} / {name}: {why}")
            return None
        return row

    def add(self, table: Table, row: Row, other_table: Table, other: Row, metrics: Iterable[str], claim: Claim) -> None:
        constant = {*constant_metrics(table), *constant_metrics(other_table)}
        for metric in metrics:
            if metric in constant:
                # A saturated metric (one value in every run) says nothing about the claim.
                self.finding.unavailable.append(f"{metric_label(metric)} is constant in every run (left out)")
            else:
                self.finding.checks.append(_check(table, row, other_table, other, metric, claim))

    def against_baseline(self, key: str, metrics: Iterable[str] | None, claims: dict[str, Claim]) -> None:
        """Every non-baseline row of a table against its baseline; ``claims`` maps metric kinds to directions."""
        table = self.table(key)
        if table is None:
            return
        baseline = self.row(table, table.baseline)
        for candidate in table.rows:
            if candidate.name == table.baseline:
                continue
            row = self.row(table, candidate.name)
            if row is None or baseline is None:
                continue
            for metric in metrics or table.metrics:
                kind = "list" if _is_list_metric(metric) else metric
                if kind in claims:
                    self.add(table, row, table, baseline, [metric], claims[kind])


def evaluate_findings(tables: dict[str, Table]) -> list[Finding]:
    """Check the paper's five findings on this run's tables.

    1. Stage hard negatives beat random ones on Recall/NDCG: each Table 2 row against Baseline.
    2. FS-LTR beats hard-negative mining: each Table 3 row against the Table 2 row of the same stage, and Table
       3's FS-LTR row against every Table 2 row but Baseline, on Recall/NDCG.
    3. Extra stage negatives raise Recall/NDCG but lower AUC: each Table 4 and Table 6 row against Baseline.
    4. FS-LTR beats PositiveRank beats Baseline on Recall: Tables 5 and 7.
    5. The auxiliary ranking loss and competing-item modelling raise AUC: Tables 11 to 14, each row against
       Baseline.

    Args:
        tables: The report's tables by key (missing tables and rows are noted, not fatal).

    Returns:
        The five findings with their checks.
    """
    statements = [
        "Stage samples as hard negatives beat random negatives on Recall/NDCG (Table 2, each row vs Baseline).",
        "FS-LTR beats hard-negative mining on Recall/NDCG (Table 3 vs Table 2 for the same stage; Table 3's "
        "FS-LTR row vs every Table 2 row).",
        "Extra stage negatives raise Recall/NDCG but lower AUC (Tables 4 and 6, each row vs Baseline).",
        "FS-LTR beats PositiveRank, which beats Baseline, on Recall (Tables 5 and 7).",
        "The auxiliary ranking loss and competing-item modelling raise AUC (Tables 11-14, each vs Baseline).",
    ]
    findings = [Finding(number, statement) for number, statement in enumerate(statements, start=1)]

    _Collector(tables, findings[0]).against_baseline("table2", None, {"list": "higher"})

    second = _Collector(tables, findings[1])
    hard, cascade = second.table("table2"), second.table("table3")
    if hard is not None and cascade is not None:
        metrics = [m for m in cascade.metrics if m in hard.metrics and _is_list_metric(m)]
        for candidate in cascade.rows:
            if candidate.name in (cascade.baseline, "FS-LTR") or hard.row(candidate.name) is None:
                continue
            row, other = second.row(cascade, candidate.name), second.row(hard, candidate.name)
            if row is not None and other is not None:
                second.add(cascade, row, hard, other, metrics, "higher")
        fsltr = second.row(cascade, "FS-LTR")
        for candidate in hard.rows:
            if candidate.name == hard.baseline or fsltr is None:
                continue
            other = second.row(hard, candidate.name)
            if other is not None:
                second.add(cascade, fsltr, hard, other, metrics, "higher")

    third = _Collector(tables, findings[2])
    for key in ("table4", "table6"):
        third.against_baseline(key, None, {"list": "higher", "auc": "lower"})

    fourth = _Collector(tables, findings[3])
    for key in ("table5", "table7"):
        table = fourth.table(key)
        if table is None:
            continue
        recall = [m for m in table.metrics if "recall" in m]
        fsltr, positive, baseline = (fourth.row(table, n) for n in ("FS-LTR", "PositiveRank", table.baseline))
        if fsltr is not None and positive is not None:
            fourth.add(table, fsltr, table, positive, recall, "higher")
        if positive is not None and baseline is not None:
            fourth.add(table, positive, table, baseline, recall, "higher")

    fifth = _Collector(tables, findings[4])
    for key in ("table11", "table12", "table13", "table14"):
        fifth.against_baseline(key, ["auc"], {"auc": "higher"})
    return findings


def _number(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.4g}"


def _pct(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{100 * value:+.1f}%"


def findings_markdown(findings: Sequence[Finding]) -> str:
    """The *Findings* section: each finding's verdict, its counts, and every comparison with its p-value and MDE."""
    lines = [
        "## Findings",
        "",
        "Each finding of the paper is checked with paired t-tests (pairs = runs of the same seed, two-sided, "
        f"α = {ALPHA:g}) on this run's numbers. Each comparison states its minimum detectable effect (MDE, 80% "
        "power, relative to the compared row's mean) and the paper's relative change for the same pair, and is "
        "**holds** (significant in the claimed direction), **reversed** (significant the other way), **no effect "
        "larger than the MDE** (not significant though the paper's effect would have been detected) or "
        "**underpowered** (not significant, MDE above the paper's effect or no paper number). A finding **holds** "
        "when none is reversed and at least half hold; **does not hold** when none holds and at least half are "
        "reversed or no effect larger than the MDE; **underpowered** when none holds or is reversed and fewer "
        "than half are adequately powered; **mixed** otherwise; **not evaluated** when no comparison has two "
        "paired seeds.",
        "",
    ]
    for finding in findings:
        counts = finding.counts
        lines.append(f"### {finding.number}. {finding.statement}")
        lines.append("")
        summary = f"**{finding.verdict}**: " + ", ".join(f"{n} {name}" for name, n in counts.items())
        summary += f" (of {sum(counts.values())} tested comparisons)."
        lines.append(summary if finding.checks else f"**{finding.verdict}**: no comparison could be made.")
        if finding.unavailable:
            lines += ["", "Not available or left out: " + "; ".join(dict.fromkeys(finding.unavailable)) + "."]
        if finding.checks:
            lines += [
                "",
                "| Comparison | Metric | Claim | Mean | vs mean | change | MDE | paper | p | Outcome |",
                "|---|---|---|---|---|---:|---:|---:|---|---|",
            ]
            for check in finding.checks:
                other = (
                    check.other
                    if check.other_table == check.table
                    else f"{check.other} ({display_name(check.other_table)})"
                )
                name = f"{display_name(check.table)}: {check.row} vs {other}"
                p = "n/a" if math.isnan(check.test.p_value) else f"{check.test.p_value:.3g}"
                change = check.row_mean / check.other_mean - 1 if check.other_mean else math.nan
                mde = "n/a" if math.isnan(check.mde) else f"{100 * check.mde:.1f}%"
                lines.append(
                    f"| {name} | {metric_label(check.metric)} | {check.claim} | {_number(check.row_mean)} | "
                    f"{_number(check.other_mean)} | {_pct(change)} | {mde} | {_pct(check.paper_effect)} | {p} "
                    f"| {check.outcome} |"
                )
        lines.append("")
    return "\n".join(lines)


def seeds_needed_table(tables: Iterable[Table], max_seeds: int = 1000) -> list[dict[str, object]]:
    """How many seeds each table needs for an MDE at the paper's effect sizes.

    For every row against the table's baseline on every metric with a paper number and a non-zero paper effect,
    the seeds needed are :func:`~stcrank.reports.stats.seeds_needed` of the sample SD of this run's per-seed
    differences (relative to the baseline's mean) and the paper's relative change.

    Args:
        tables: The report's tables.
        max_seeds: Above this many, a comparison counts as out of reach.

    Returns:
        One dict per table with comparisons: ``table``, ``seeds`` (this run's), ``comparisons`` (with a paper
        effect and two paired seeds), ``powered`` (MDE at or below the paper's effect now), ``median`` and ``max``
        seeds needed (``max`` None when a comparison needs more than ``max_seeds``), ``out_of_reach`` (how many).
    """
    out: list[dict[str, object]] = []
    for table in tables:
        baseline = table.baseline_row
        if baseline is None:
            continue
        needs: list[int | None] = []
        powered = 0
        seeds = 0
        for row in table.rows:
            if row is baseline:
                continue
            for metric in table.metrics:
                effect = paper_effect(row, baseline, metric)
                differences = _differences(row, baseline, metric)
                centre = abs(baseline.summary(metric)[0])
                if effect is None or effect == 0 or len(differences) < 2 or not centre:
                    continue
                seeds = max(seeds, len(differences))
                sd = sample_std(differences) / centre
                needs.append(seeds_needed(sd, effect, ALPHA, at_most=max_seeds))
                powered += relative_mde(row, baseline, metric) <= abs(effect)
        if not needs:
            continue
        reached = sorted(n for n in needs if n is not None)
        out.append(
            {
                "table": table.key,
                "seeds": seeds,
                "comparisons": len(needs),
                "powered": powered,
                "median": reached[len(reached) // 2] if reached else None,
                "max": max(reached) if len(reached) == len(needs) else None,
                "out_of_reach": len(needs) - len(reached),
            }
        )
    return out


def seeds_needed_markdown(rows: Sequence[dict[str, object]], max_seeds: int = 1000) -> str:
    """The *Power* section: seeds each table needs for an MDE at the paper's effect sizes."""
    if not rows:
        return ""
    lines = [
        "## Power: seeds needed",
        "",
        "Seeds each table needs so that every comparison with its baseline has a minimum detectable effect (80% "
        "power, two-sided 5%) at or below the paper's relative change for that row and metric, from the spread of "
        "this run's per-seed differences. Comparisons whose paper effect is zero or missing are left out.",
        "",
        "| Table | seeds now | comparisons | powered now | median seeds needed | seeds needed (all) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        most = row["max"] if row["max"] is not None else f"> {max_seeds} ({row['out_of_reach']} out of reach)"
        median = row["median"] if row["median"] is not None else f"> {max_seeds}"
        lines.append(
            f"| {display_name(str(row['table']))} | {row['seeds']} | {row['comparisons']} | {row['powered']} "
            f"| {median} | {most} |"
        )
    return "\n".join(lines) + "\n"
