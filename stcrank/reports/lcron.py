"""``stcrank report lcron``: the two-stage cascade benchmark of LCRON (ICML 2025) over seeds, with its claims checked.

The report config (``configs/reports/lcron.yaml``) names one experiment config per loss, the metrics, the two
reference rows (``baseline``, BCE, and ``method``, LCRON) and the *directions* to check. The report

1. prepares the data: the store given with ``--data`` (e.g. the imported release), or a store generated with
   :func:`~stcrank.data.recflow.synth.synth_recflow` and imported (kept under ``<out>/data/`` for reuse). On a
   generated store the lists take the ranking stage's top 10 as ``rank_pos`` (``--data.positives rank_top``):
   the generator flags only the ones the re-rank dropped, about 6 a request;
2. runs every loss once per seed through :mod:`stcrank.reports.runner` (cached in ``<out>/results.jsonl``, so a
   killed report resumes where it stopped);
3. prints and writes (``<out>/report.md``) the table loss x metric, mean ± standard error over seeds, the paired
   t-tests of every loss against BCE and against LCRON, the directions with their verdicts, and, on a generated
   store, the ground truth of the funnel (:mod:`stcrank.reports.lcron_truth`) with the reasons a direction fails.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from stcrank.reports.runner import (
    ExperimentRunner,
    ResultCache,
    RunSpec,
    collect_results,
    data_fingerprint,
    display_path,
    existing_store,
    report_config_path,
    report_seeds,
    split_names,
)
from stcrank.reports.stats import TTest, mean, paired_t_test, sample_std

__all__ = [
    "LCRON_FUNNEL",
    "PRESETS",
    "Comparison",
    "Direction",
    "DirectionResult",
    "LCRONReportConfig",
    "LossRow",
    "comparisons_markdown",
    "evaluate_directions",
    "load_lcron_config",
    "report_lcron",
    "results_markdown",
]

DEFAULT_CONFIG = "configs/reports/lcron.yaml"
ALPHA = 0.05

LCRON_FUNNEL: dict[str, int] = {
    "retrieved": 300,
    "prerank_keep": 150,
    "coarse_keep": 80,
    "rank_keep": 40,
    "stage_samples": 20,
}
"""Funnel of generated stores: enough dropped items for 10 samples of every stage, generated fast."""


@dataclass(frozen=True)
class Preset:
    """Defaults of a report mode; each can be overridden on the command line.

    Attributes:
        name: ``full`` or ``quick``.
        seeds: Seeds per loss.
        users: Users of a generated store.
        days: Days of a generated store (the last is the test day).
        threads: ``torch.set_num_threads`` during the runs (None: all cores).
        batch_size: Requests per training batch.
    """

    name: str
    seeds: int
    users: int
    days: int
    threads: int | None
    batch_size: int


PRESETS: dict[str, Preset] = {
    # Five seeds as the reference's five runs; ~3,000 requests a day for 7 training days, batches of 256.
    "full": Preset("full", seeds=5, users=1000, days=8, threads=None, batch_size=256),
    # Minutes on 2 cores: 3 seeds (the fewest that leave a paired t-test two degrees of freedom), a small store,
    # one thread (small models gain nothing from more on a busy machine) and batches of 64.
    "quick": Preset("quick", seeds=3, users=100, days=4, threads=1, batch_size=64),
}


# -- the report config -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Direction:
    """A claim: ``better`` has a higher ``metric`` than each row of ``worse``."""

    statement: str
    better: str
    worse: tuple[str, ...]
    metric: str


@dataclass(frozen=True)
class LCRONReportConfig:
    """The report config: rows (loss name -> experiment config), metrics, reference rows and directions."""

    title: str
    metrics: tuple[str, ...]
    baseline: str
    method: str
    rows: tuple[tuple[str, Path], ...]
    directions: tuple[Direction, ...]


def _error(path: Path, key: str, expected: str) -> ValueError:
    return ValueError(f"{path}: {key}: expected {expected}")


def load_lcron_config(path: str | Path) -> LCRONReportConfig:
    """Read the report config (see ``configs/reports/lcron.yaml``).

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: If it is not valid YAML or a key is missing or wrong (the message names the file and the key).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: report config not found")
    try:
        parsed = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ValueError(f"{path}: not valid YAML ({error})") from error
    if not isinstance(parsed, dict):
        raise _error(path, "(top level)", "a mapping with rows, metrics, baseline, method")
    rows, metrics = parsed.get("rows"), parsed.get("metrics")
    if not isinstance(rows, dict) or not rows or not all(isinstance(c, str) for c in rows.values()):
        raise _error(path, "rows", "a mapping of loss names to experiment config paths")
    if not isinstance(metrics, list) or not metrics or not all(isinstance(m, str) for m in metrics):
        raise _error(path, "metrics", "a non-empty list of metric names (e.g. joint_recall)")
    for key in ("baseline", "method"):
        if parsed.get(key) not in rows:
            raise _error(path, key, f"one of the row names {list(rows)}, got {parsed.get(key)!r}")
    directions = []
    for index, entry in enumerate(parsed.get("directions") or []):
        where = f"directions[{index}]"
        if not isinstance(entry, dict):
            raise _error(path, where, "a mapping with statement, better, worse and metric")
        worse = entry.get("worse")
        worse = [worse] if isinstance(worse, str) else worse
        names = [entry.get("better"), *(worse or [])]
        if not worse or any(name not in rows for name in names):
            raise _error(path, f"{where}.better/worse", f"row names among {list(rows)}, got {names}")
        if entry.get("metric") not in metrics:
            raise _error(path, f"{where}.metric", f"one of the metrics {metrics}, got {entry.get('metric')!r}")
        statement = str(entry.get("statement") or f"{entry['better']} beats {', '.join(worse)} on {entry['metric']}")
        directions.append(Direction(statement, str(entry["better"]), tuple(worse), str(entry["metric"])))
    resolved = tuple((str(name), (path.parent / config).resolve()) for name, config in rows.items())
    return LCRONReportConfig(
        str(parsed.get("title", "LCRON benchmark")),
        tuple(metrics),
        str(parsed["baseline"]),
        str(parsed["method"]),
        resolved,
        tuple(directions),
    )


# -- rows and statistics -----------------------------------------------------------------------------------------


@dataclass
class LossRow:
    """One loss: its config and the test metrics of each seed that ran."""

    name: str
    config: str
    runs: dict[int, dict[str, float]] = field(default_factory=dict)
    failures: dict[int, str] = field(default_factory=dict)
    missing: bool = False

    def values(self, metric: str) -> dict[int, float]:
        """The metric of every seed that has it (NaN left out)."""
        return {s: m[metric] for s, m in sorted(self.runs.items()) if metric in m and not math.isnan(m[metric])}

    def summary(self, metric: str) -> tuple[float, float, int]:
        """``(mean, standard error, n)`` over seeds; the standard error is NaN below two seeds."""
        values = list(self.values(metric).values())
        spread = sample_std(values)
        return mean(values), spread / math.sqrt(len(values)) if len(values) > 1 else math.nan, len(values)

    def status(self) -> str:
        """A short reason when the row has no results."""
        if self.missing:
            return "not run: config missing"
        if not self.runs:
            return f"failed: {next(iter(self.failures.values()))}" if self.failures else "not run yet"
        return "ok"


def compare(row: LossRow, other: LossRow, metric: str) -> TTest:
    """Paired t-test of ``row`` against ``other`` over the seeds both have."""
    a, b = row.values(metric), other.values(metric)
    seeds = sorted(set(a) & set(b))
    return paired_t_test([a[s] for s in seeds], [b[s] for s in seeds])


@dataclass(frozen=True)
class Comparison:
    """One comparison of a direction."""

    better: str
    worse: str
    metric: str
    test: TTest

    @property
    def outcome(self) -> Literal["for", "against", "n.s."]:
        """``for``/``against``: significant in / against the claimed direction; ``n.s.`` otherwise."""
        if not self.test.significant(ALPHA):
            return "n.s."
        return "for" if self.test.mean_difference > 0 else "against"


@dataclass
class DirectionResult:
    """A direction checked on the run."""

    direction: Direction
    comparisons: list[Comparison] = field(default_factory=list)
    unavailable: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        """The verdict on this run.

        ``holds``: every comparison significantly for; ``does not hold``: one significantly against; ``not
        shown``: otherwise; ``not evaluated``: no comparison had two paired seeds.
        """
        tested = [c for c in self.comparisons if not math.isnan(c.test.p_value)]
        if not tested:
            return "not evaluated"
        outcomes = [c.outcome for c in self.comparisons]
        if "against" in outcomes:
            return "does not hold"
        if len(tested) == len(self.comparisons) and all(o == "for" for o in outcomes) and not self.unavailable:
            return "holds"
        return "not shown"


def evaluate_directions(rows: dict[str, LossRow], directions: Sequence[Direction]) -> list[DirectionResult]:
    """Check every direction with paired t-tests (rows without results are noted, not fatal)."""
    results = []
    for direction in directions:
        result = DirectionResult(direction)
        better = rows.get(direction.better)
        for name in direction.worse:
            worse = rows.get(name)
            missing = [r.name for r in (better, worse) if r is not None and not r.runs]
            if better is None or worse is None or missing:
                result.unavailable.append(f"{name}: no results" if worse is not None else f"{name}: not in the report")
                continue
            result.comparisons.append(
                Comparison(direction.better, name, direction.metric, compare(better, worse, direction.metric))
            )
        results.append(result)
    return results


# -- markdown ----------------------------------------------------------------------------------------------------


def _cell(row: LossRow, metric: str) -> str:
    value, se, n = row.summary(metric)
    if n == 0:
        return "n/a"
    return f"{value:.4f}" if math.isnan(se) else f"{value:.4f} ± {se:.4f}"


def results_markdown(rows: Sequence[LossRow], metrics: Sequence[str]) -> str:
    """The table loss x metric, ``mean ± standard error`` over seeds, best mean of each column in bold."""
    best = {
        metric: max((r.summary(metric)[0] for r in rows if r.values(metric)), default=math.nan) for metric in metrics
    }
    lines = ["| Loss | " + " | ".join(metrics) + " | Seeds |", "|---|" + "---|" * (len(metrics) + 1)]
    for row in rows:
        if not row.runs:
            lines.append(f"| {row.name} | {row.status()} |" + " |" * len(metrics))
            continue
        cells = []
        for metric in metrics:
            text = _cell(row, metric)
            cells.append(f"**{text}**" if row.values(metric) and row.summary(metric)[0] == best[metric] else text)
        lines.append(f"| {row.name} | " + " | ".join(cells) + f" | {len(row.runs)} |")
    return "\n".join(lines)


def _p(test: TTest) -> str:
    return "n/a" if math.isnan(test.p_value) else f"{test.p_value:.3g}"


def comparisons_markdown(rows: Sequence[LossRow], metrics: Sequence[str], reference: str) -> str:
    """Every row against ``reference``: mean paired difference (p-value), ``†`` where ``p < 0.05``."""
    other = next((r for r in rows if r.name == reference), None)
    if other is None or not other.runs:
        return f"{reference} has no results: no comparison."
    lines = ["| Loss | " + " | ".join(metrics) + " |", "|---|" + "---|" * len(metrics)]
    for row in rows:
        if row.name == reference or not row.runs:
            continue
        cells = []
        for metric in metrics:
            test = compare(row, other, metric)
            mark = "†" if test.significant(ALPHA) else ""
            cells.append("n/a" if test.n == 0 else f"{test.mean_difference:+.4f} ({_p(test)}){mark}")
        lines.append(f"| {row.name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def directions_markdown(results: Sequence[DirectionResult], why: dict[tuple[str, str, str], list[str]]) -> str:
    """The *Directions* section: verdicts, comparisons and, where one fails, why."""
    lines = [
        "## Directions",
        "",
        f"Paired two-sided t-tests over seeds (α = {ALPHA:g}). **holds**: every comparison significantly in the "
        "claimed direction; **does not hold**: one significantly against; **not shown**: otherwise.",
        "",
    ]
    for result in results:
        lines += [f"### {result.direction.statement}", "", f"**{result.verdict}**", ""]
        if result.unavailable:
            lines += ["Not available: " + "; ".join(result.unavailable) + ".", ""]
        if result.comparisons:
            lines += ["| Comparison | Metric | Difference | p | Outcome |", "|---|---|---|---|---|"]
            for c in result.comparisons:
                lines.append(
                    f"| {c.better} vs {c.worse} | {c.metric} | {c.test.mean_difference:+.4f} | {_p(c.test)} | "
                    f"{c.outcome} |"
                )
            lines.append("")
        for c in result.comparisons:
            reasons = why.get((c.better, c.worse, c.metric))
            if c.outcome != "for" and reasons:
                lines += [f"Why not {c.better} > {c.worse}: " + " ".join(reasons), ""]
    return "\n".join(lines)


# -- data --------------------------------------------------------------------------------------------------------


def prepare_store(*, out: Path, data: str | None, users: int, days: int, seed: int) -> tuple[Path, str, bool]:
    """The store to run on: ``data``, or one generated (or reused) under ``<out>/data/``.

    Returns:
        The store, a one-line description, and whether it was generated.

    Raises:
        FileNotFoundError: If ``data`` is not a store (no manifest).
    """
    if data is not None:
        return (*existing_store(data), False)
    from stcrank.data.recflow.importer import import_recflow
    from stcrank.data.recflow.synth import synth_recflow

    funnel = "-".join(str(LCRON_FUNNEL[k]) for k in sorted(LCRON_FUNNEL))
    root = out / "data" / f"synth-u{users}-d{days}-s{seed}-f{funnel}"
    store = root / "store"
    description = (
        f"generated by `stcrank data synth-recflow` (users={users}, days={days}, seed={seed}, "
        + ", ".join(f"{k}={v}" for k, v in LCRON_FUNNEL.items())
        + f") and imported into `{store}`"
    )
    if not (store / "manifest.json").is_file():
        release = root / "release"
        synth_recflow(out=str(release), users=users, days=days, seed=seed, overwrite=True, **LCRON_FUNNEL)
        import_recflow(src=str(release), dst=str(store), overwrite=True)
        shutil.rmtree(release)
    return store, description, True


def _world(users: int, seed: int) -> Any:
    from stcrank.data.recflow.synth import default_item_count
    from stcrank.data.recflow.world import SyntheticWorld

    return SyntheticWorld.create(users, default_item_count(users, LCRON_FUNNEL["retrieved"]), seed)


# -- the report --------------------------------------------------------------------------------------------------


def report_lcron(
    *,
    report_config: str = DEFAULT_CONFIG,
    out: str = "runs/reports/lcron",
    data: str | None = None,
    users: int | None = None,
    days: int | None = None,
    data_seed: int = 0,
    seeds: int | None = None,
    first_seed: int = 0,
    losses: str | list[str] | None = None,
    quick: bool = False,
    threads: int | None = None,
    positives: Literal["rank_pos", "rank_top"] | None = None,
    run: bool = True,
    retry_failed: bool = True,
    keep_checkpoints: bool = False,
    extra_args: list[str] | None = None,
) -> dict[str, Any]:
    """Run LCRON's two-stage cascade benchmark over several seeds and print the table, tests and directions.

    Every loss of the report config is fitted and tested once per seed in this process, results cached in
    ``<out>/results.jsonl`` by config content, seed, arguments and data fingerprint (a second call runs only what
    is missing). The table gives mean ± standard error over seeds; each loss is compared with BCE and with LCRON
    by two-sided paired t-tests (pairs = the same seed on the same data).

    Args:
        report_config: The report config (losses, metrics, reference rows, directions).
        out: Output directory: ``report.md``, ``results.jsonl``, ``runs/``, ``data/``.
        data: An existing RecFlow store (``stcrank data import-recflow --dst``); by default one is generated.
        users: Users of the generated store (default: 1000, or 100 with ``--quick``).
        days: Days of the generated store, the last being the test day (default: 8, or 4 with ``--quick``).
        data_seed: Seed of the generated store.
        seeds: Seeds per loss (default: 5, or 3 with ``--quick``).
        first_seed: The first seed; the seeds are ``first_seed .. first_seed + seeds - 1``.
        losses: Losses to run, comma-separated row names (``"LCRON,ARF"``); BCE and LCRON are always kept for the
            comparisons. Default all.
        quick: The quick preset: a small generated store, 3 seeds, one thread, batches of 64; minutes.
        threads: ``torch.set_num_threads`` during the runs (default: every core, or 1 with ``--quick``).
        positives: The lists' top items (``--data.positives``): default ``rank_top`` on a generated store (whose
            ``rank_pos`` flag marks only the ones the re-rank dropped) and the config's on ``--data``.
        run: Run what is missing; ``false`` writes the report from cached results only.
        retry_failed: Run again the runs whose cached result is a failure.
        keep_checkpoints: Keep each run's checkpoints.
        extra_args: Extra arguments for every fit and test, e.g. ``[--trainer.accelerator=gpu]``.

    Returns:
        A summary: the paths written, the run counts, and each direction's verdict.
    """
    preset = PRESETS["quick" if quick else "full"]
    seed_list = report_seeds(first_seed, seeds if seeds is not None else preset.seeds)
    config = load_lcron_config(report_config_path(report_config, DEFAULT_CONFIG))
    chosen = split_names(losses)
    if chosen is not None:
        unknown = [name for name in chosen if name not in dict(config.rows)]
        if unknown:
            raise ValueError(f"--losses: unknown {unknown}; the report config has {[n for n, _ in config.rows]}")
    keep = None if chosen is None else {*chosen, config.baseline, config.method}
    rows_spec = [(name, path) for name, path in config.rows if keep is None or name in keep]
    out_dir = Path(out).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    n_users = users if users is not None else preset.users
    store, data_text, generated = prepare_store(
        out=out_dir, data=data, users=n_users, days=days if days is not None else preset.days, seed=data_seed
    )
    tops = positives or ("rank_top" if generated else None)
    fingerprint = data_fingerprint(store)
    args = (f"--data.init_args.batch_size={preset.batch_size}",)
    args += (f"--data.init_args.positives={tops}",) if tops else ()
    args += tuple(extra_args or ())
    present = [(name, path) for name, path in rows_spec if path.is_file()]
    specs = [RunSpec(path, seed, store, args) for seed in seed_list for _, path in present]
    cache = ResultCache(out_dir / "results.jsonl")
    cached = dict(cache.results)
    n_threads = threads or preset.threads or os.cpu_count() or 1
    runner = ExperimentRunner(out_dir / "runs", keep_checkpoints=keep_checkpoints, reuse_fit=True) if run else None
    by_run = collect_results(specs, cache, fingerprint, runner, n_threads, retry_failed=retry_failed)
    rows = {}
    for name, path in rows_spec:
        row = LossRow(name, display_path(path), missing=not path.is_file())
        for seed in seed_list:
            result = by_run.get((path, seed))
            if result is not None and result.status == "ok":
                row.runs[seed] = dict(result.metrics)
            elif result is not None:
                row.failures[seed] = result.error or "unknown error"
        rows[name] = row
    checked = evaluate_directions(rows, config.directions)
    truth = None
    if generated and any(r.runs for r in rows.values()):
        from stcrank.reports.lcron_truth import funnel_truth

        truth = funnel_truth(str(store), _world(n_users, data_seed), tops or "rank_pos")
    why = _reasons(checked, rows, config.metrics, truth)
    ran = [r for r in by_run.values() if cached.get(r.key) is not r]
    per_run = [sum(r.seconds.get(k, 0.0) for k in ("fit", "test")) for r in by_run.values() if r.status == "ok"]
    header = [
        f"Written by `stcrank report lcron` on {dt.datetime.now().strftime('%Y-%m-%d %H:%M')}.",
        "",
        f"- Preset: {preset.name}; seeds: {', '.join(map(str, seed_list))}; torch threads: {n_threads}; training "
        f"batches of {preset.batch_size} requests{f'; lists with --data.positives {tops}' if tops else ''}.",
        f"- Data: {data_text}; fingerprint `{fingerprint}`.",
        f"- Runs: {sum(r.status == 'ok' for r in by_run.values())} succeeded, "
        f"{sum(r.status == 'failed' for r in by_run.values())} failed, {len(ran)} run now"
        + (f", {sum(per_run) / len(per_run):.1f} s per run (fit and test)" if per_run else "")
        + f"; report took {time.perf_counter() - started:.0f} s.",
        "- Statistics: mean ± standard error over seeds; paired two-sided t-tests (pairs = the same seed).",
    ]
    text = _report_text(config, list(rows.values()), checked, why, truth, header)
    (out_dir / "report.md").write_text(text)
    print(text)
    print(f"report: {out_dir / 'report.md'}", file=sys.stderr)
    return {
        "report": str(out_dir / "report.md"),
        "results": str(cache.path),
        "runs": {status: sum(r.status == status for r in by_run.values()) for status in ("ok", "failed")},
        "directions": {result.direction.statement: result.verdict for result in checked},
    }


def _reasons(
    checked: Sequence[DirectionResult], rows: dict[str, LossRow], metrics: Sequence[str], truth: Any
) -> dict[tuple[str, str, str], list[str]]:
    from stcrank.reports.lcron_truth import explain

    means = {name: {m: row.summary(m)[0] for m in metrics if row.values(m)} for name, row in rows.items()}
    errors = {name: {m: row.summary(m)[1] for m in metrics if len(row.values(m)) > 1} for name, row in rows.items()}
    return {
        (c.better, c.worse, c.metric): explain(c.better, c.worse, c.metric, c.outcome, means, truth, errors)
        for result in checked
        for c in result.comparisons
        if c.outcome != "for"
    }


def _report_text(
    config: LCRONReportConfig,
    rows: list[LossRow],
    checked: Sequence[DirectionResult],
    why: dict[tuple[str, str, str], list[str]],
    truth: Any,
    header: list[str],
) -> str:
    from stcrank.reports.lcron_truth import truth_markdown

    lines = ["# LCRON benchmark", "", *header, "", f"## {config.title}", "", results_markdown(rows, config.metrics), ""]
    for reference in (config.baseline, config.method):
        lines += [
            f"### Against {reference}",
            "",
            "Mean paired difference (p-value); † where p < 0.05.",
            "",
            comparisons_markdown(rows, config.metrics, reference),
            "",
        ]
    lines.append(directions_markdown(checked, why))
    if truth is not None:
        lines += [truth_markdown(truth)]
    return "\n".join(lines)
