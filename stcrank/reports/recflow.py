"""``stcrank report recflow``: run the RecFlow paper's experiments over several seeds and write its tables.

The report config (``configs/reports/recflow.yaml``) maps each paper table to its rows' experiment configs and
the metrics to show. The report

1. prepares the data: the store given with ``--data`` (e.g. the imported real RecFlow), or a store generated
   with :func:`~stcrank.data.recflow.synth.synth_recflow` and imported (kept under ``<out>/data/`` for reuse);
2. runs every distinct config of the chosen tables once per seed (seed-major: all configs for the first seed,
   then the second...), in this process, caching each result in ``<out>/results.jsonl`` as it arrives, so a
   killed report resumes where it stopped;
3. writes ``<out>/report.md`` (the tables in the paper's layout, the differences from each table's baseline
   with their p-values, and the *Findings*: which of the paper's findings hold on this run) and one PNG per table.

A config that does not exist yet is listed as ``not run: config missing``; a config that fails is recorded
with its error and shown as ``failed: <message>``; neither stops the report.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import shlex
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from stcrank.errors import ConfigError
from stcrank.reports.plots import plot_table
from stcrank.reports.recflow_findings import (
    ALPHA,
    Check,
    Finding,
    evaluate_findings,
    findings_markdown,
    seeds_needed_markdown,
    seeds_needed_table,
)
from stcrank.reports.runner import (
    ExperimentRunner,
    ResultCache,
    RunResult,
    RunSpec,
    collect_results,
    data_fingerprint,
    data_init_parameters,
    display_path,
    existing_store,
    report_config_path,
    report_seeds,
    split_names,
)
from stcrank.reports.tables import (
    Row,
    Table,
    differences_markdown,
    display_name,
    format_table,
    metric_scale,
)

__all__ = [
    "PRESETS",
    "REPORT_FUNNEL",
    "Check",
    "Finding",
    "Preset",
    "TableSpec",
    "evaluate_findings",
    "findings_markdown",
    "funnel_truth_markdown",
    "load_report_config",
    "prepare_data",
    "report_recflow",
]

DEFAULT_CONFIG = "configs/reports/recflow.yaml"
PAPER_PERCENT_TABLES = frozenset({"table2", "table3", "table9", "table10"})
"""The paper gives retrieval Recall/NDCG in percent (Tables 2, 3, 9, 10) and every other number as a fraction."""

DEFAULT_RETRIEVAL_NOISE = 0.5
"""Noise of the generator's personalised retrieval scorer when ``retrieval_pool > 1``."""

REPORT_FUNNEL: dict[str, int] = {
    "retrieved": 600,
    "prerank_keep": 400,
    "coarse_keep": 250,
    "rank_keep": 100,
    "stage_samples": 80,
}
"""Funnel of generated stores: about 175 ranking-stage and 255 coarse-stage candidates per test request, so that
Recall/NDCG@50..200 are not trivially 1 (the generator's default funnel logs about 40)."""


@dataclass(frozen=True)
class Preset:
    """Defaults of a report mode; each can be overridden on the command line.

    Attributes:
        name: ``full`` or ``quick``.
        seeds: Seeds per config.
        users: Users of a generated store.
        days: Days of a generated store (the last is the test day).
        threads: ``torch.set_num_threads`` during the runs (None: all cores).
        reuse_fit: Test with the fitted Trainer instead of a second ``stcrank test`` (see
            :class:`~stcrank.reports.runner.ExperimentRunner`).
        batch_size: Training batch size given to data modules that take ``batch_size`` (None: the config's).
    """

    name: str
    seeds: int
    users: int
    days: int
    threads: int | None
    reuse_fit: bool
    batch_size: int | None


PRESETS: dict[str, Preset] = {
    # The configs as they are, 5 seeds as in the paper.
    "full": Preset("full", seeds=5, users=500, days=8, threads=None, reuse_fit=False, batch_size=None),
    # A smoke run of every table on 2 cores: 3 seeds (the fewest that leave the paired t-test a variance estimate
    # with 2 degrees of freedom), one thread per run (small models gain nothing from more on a busy machine),
    # batches of 128, and a store just large enough that every reported cut-off can move: 200 users over 4 days
    # expose about 1,170 videos, above Recall/NDCG@1000's corpus (40 users exposed about 430, which made
    # Recall@500 and @1000 constant and NDCG@500 equal NDCG@1000).
    "quick": Preset("quick", seeds=3, users=200, days=4, threads=1, reuse_fit=True, batch_size=128),
}


# -- the report config -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TableSpec:
    """One table of the report config.

    Attributes:
        key: The table's key (``table2``).
        title: What it shows.
        metrics: Metric names, without ``test/``.
        baseline: The row the others are compared with.
        rows: ``(row name, experiment config path)`` in display order; paths resolved against the report config.
        percent: Recall/NDCG in percent.
        paper: The paper's values: row name -> metric -> value, in the table's units (missing numbers left out).
    """

    key: str
    title: str
    metrics: tuple[str, ...]
    baseline: str
    rows: tuple[tuple[str, Path], ...]
    percent: bool
    paper: dict[str, dict[str, float]] = field(default_factory=dict)


def _config_error(path: Path, where: str, expected: str) -> ConfigError:
    return ConfigError(f"{path}: {where}: expected {expected}")


def load_report_config(path: str | Path) -> list[TableSpec]:
    """Read a report config: ``tables: {key: {title, metrics, baseline, rows: {name: config}, units?}}``.

    ``units`` (``percent`` or ``fraction``) is optional; by default Tables 2, 3, 9 and 10 (retrieval) show
    Recall/NDCG in percent, as the paper does, and the others show fractions.

    Args:
        path: The YAML file.

    Returns:
        The tables, in file order.

    Raises:
        FileNotFoundError: If the file does not exist.
        ConfigError: If it is not valid YAML or lacks a key (the message names the file, the table and the key).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: report config not found")
    try:
        parsed = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML ({error})") from error
    tables = parsed.get("tables") if isinstance(parsed, dict) else None
    if not isinstance(tables, dict) or not tables:
        raise _config_error(path, "tables", "a mapping of table keys to tables")
    specs = []
    for key, table in tables.items():
        where = f"tables.{key}"
        if not isinstance(table, dict):
            raise _config_error(path, where, "a mapping with title, metrics, baseline and rows")
        metrics, rows = table.get("metrics"), table.get("rows")
        if not isinstance(metrics, list) or not metrics or not all(isinstance(m, str) for m in metrics):
            raise _config_error(path, f"{where}.metrics", "a non-empty list of metric names (e.g. auc)")
        if not isinstance(rows, dict) or not rows or not all(isinstance(c, str) for c in rows.values()):
            raise _config_error(path, f"{where}.rows", "a mapping of row names to experiment config paths")
        baseline = table.get("baseline")
        if baseline not in rows:
            raise _config_error(path, f"{where}.baseline", f"one of the row names {list(rows)}, got {baseline!r}")
        units = table.get("units", "percent" if key in PAPER_PERCENT_TABLES else "fraction")
        if units not in ("percent", "fraction"):
            raise _config_error(path, f"{where}.units", f"percent or fraction, got {units!r}")
        resolved = tuple((str(name), (path.parent / config).resolve()) for name, config in rows.items())
        paper = _paper_values(path, where, table.get("paper"), metrics, rows)
        specs.append(
            TableSpec(
                str(key),
                str(table.get("title", key)),
                tuple(metrics),
                str(baseline),
                resolved,
                units == "percent",
                paper,
            )
        )
    return specs


def _paper_values(
    path: Path, where: str, paper: Any, metrics: Sequence[str], rows: Mapping[str, str]
) -> dict[str, dict[str, float]]:
    """A table's ``paper`` entry: row name -> one value per metric (``null`` where the paper has no number)."""
    if paper is None:
        return {}
    if not isinstance(paper, dict):
        raise _config_error(path, f"{where}.paper", "a mapping of row names to one value per metric")
    out = {}
    for name, values in paper.items():
        if name not in rows:
            raise _config_error(path, f"{where}.paper.{name}", f"one of the row names {list(rows)}")
        if not isinstance(values, list) or len(values) != len(metrics):
            raise _config_error(path, f"{where}.paper.{name}", f"a list of {len(metrics)} values, one per metric")
        if not all(v is None or isinstance(v, (int, float)) for v in values):
            raise _config_error(path, f"{where}.paper.{name}", "numbers (null where the paper has none)")
        out[str(name)] = {m: float(v) for m, v in zip(metrics, values, strict=True) if v is not None}
    return out


def select(specs: Sequence[TableSpec], tables: Sequence[str] | None, rows: Sequence[str] | None) -> list[TableSpec]:
    """Keep the chosen tables, and in them the chosen rows plus the baseline.

    Raises:
        ConfigError: For a table or row name that the config does not have (listing the ones it has).
    """
    known = {spec.key: spec for spec in specs}
    if tables is not None:
        unknown = [key for key in tables if key not in known]
        if unknown:
            raise ConfigError(f"--tables: unknown tables {unknown}; the report config has {list(known)}")
        specs = [known[key] for key in tables]
    if rows is None:
        return list(specs)
    names = {name for spec in specs for name, _ in spec.rows}
    unknown = [name for name in rows if name not in names]
    if unknown:
        raise ConfigError(f"--rows: unknown rows {unknown}; the chosen tables have {sorted(names)}")
    chosen = [
        dataclasses.replace(spec, rows=tuple(r for r in spec.rows if r[0] in rows or r[0] == spec.baseline))
        for spec in specs
    ]
    return [spec for spec in chosen if len(spec.rows) > 1 or any(r[0] in rows for r in spec.rows)]


# -- data --------------------------------------------------------------------------------------------------------


def prepare_data(
    *,
    out: Path,
    data: str | None,
    users: int,
    days: int,
    seed: int,
    retrieval_pool: int = 1,
    retrieval_noise: float = DEFAULT_RETRIEVAL_NOISE,
) -> tuple[Path, str]:
    """The store to run on: ``data`` if given, else one generated (or reused) under ``<out>/data/``.

    Args:
        out: The report's output directory.
        data: An existing store (``stcrank data import-recflow --dst``), or None to generate one.
        users: Users of a generated store.
        days: Days of a generated store.
        seed: Seed of a generated store.
        retrieval_pool: The generator's ``retrieval_pool`` (1: popularity retrieval, not personalised).
        retrieval_noise: The generator's ``retrieval_noise`` (used when ``retrieval_pool > 1``).

    Returns:
        The store directory and a one-line description of it.

    Raises:
        FileNotFoundError: If ``data`` is not a store (no manifest).
    """
    if data is not None:
        return existing_store(data)
    from stcrank.data.recflow.importer import import_recflow
    from stcrank.data.recflow.synth import synth_recflow

    funnel = "-".join(str(REPORT_FUNNEL[k]) for k in sorted(REPORT_FUNNEL))
    personalised = f"-p{retrieval_pool}n{retrieval_noise:g}" if retrieval_pool > 1 else ""
    root = out / "data" / f"synth-u{users}-d{days}-s{seed}-f{funnel}{personalised}"
    store = root / "store"
    retrieval = {"retrieval_pool": retrieval_pool, "retrieval_noise": retrieval_noise} if retrieval_pool > 1 else {}
    description = (
        f"generated by `stcrank data synth-recflow` (users={users}, days={days}, seed={seed}, "
        + ", ".join(f"{k}={v}" for k, v in {**REPORT_FUNNEL, **retrieval}.items())
        + f") and imported into `{store}`"
    )
    if (store / "manifest.json").is_file():
        return store, description
    release = root / "release"
    synth_recflow(out=str(release), users=users, days=days, seed=seed, overwrite=True, **REPORT_FUNNEL, **retrieval)
    import_recflow(src=str(release), dst=str(store), overwrite=True)
    shutil.rmtree(release)  # the store holds everything the runs read; the release is reproducible
    return store, description


# -- assembling --------------------------------------------------------------------------------------------------


def _build_tables(
    specs: Sequence[TableSpec], results: dict[tuple[Path, int], RunResult], seeds: Sequence[int]
) -> list[Table]:
    tables = []
    for spec in specs:
        rows = []
        for name, config in spec.rows:
            # The paper's values are in the table's units; the runs' metrics are fractions.
            paper = {m: v / metric_scale(m, spec.percent) for m, v in spec.paper.get(name, {}).items()}
            row = Row(name, display_path(config), missing=not config.is_file(), paper=paper)
            for seed in seeds:
                result = results.get((config, seed))
                if result is None:
                    continue
                if result.status == "ok":
                    row.runs[seed] = dict(result.metrics)
                else:
                    row.failures[seed] = result.error or "unknown error"
            rows.append(row)
        tables.append(Table(spec.key, spec.title, list(spec.metrics), spec.baseline, rows, spec.percent, list(seeds)))
    return tables


def _preset_args(config: Path, preset: Preset) -> tuple[str, ...]:
    if preset.batch_size is None or "batch_size" not in (data_init_parameters(config) or ()):
        return ()
    return (f"--data.init_args.batch_size={preset.batch_size}",)


def _run_summary(results: Sequence[RunResult]) -> str:
    ok = [r for r in results if r.status == "ok"]
    per_run = [sum(r.seconds.get(k, 0.0) for k in ("fit", "test")) for r in ok]
    text = f"{len(ok)} succeeded, {len(results) - len(ok)} failed"
    if per_run:
        fit = sum(r.seconds.get("fit", 0.0) for r in ok) / len(ok)
        test = sum(r.seconds.get("test", 0.0) for r in ok) / len(ok)
        text += f"; mean {sum(per_run) / len(per_run):.1f} s per run (fit {fit:.1f} s + test {test:.1f} s)"
    return text


def funnel_truth_markdown(store: Path, *, users: int, seed: int, retrieval_pool: int = 1) -> str:
    """The *Ground truth of the generated funnel* section of a report on a generated store.

    Rebuilds the generator's world from the report's data arguments and compares each stage's logged items with
    random exposed-corpus items (see :func:`~stcrank.data.recflow.funnel_truth.stage_truth`); the text says which
    stages break the assumption behind findings 1 and 2 (every stage sample is better than a random item).

    Args:
        store: The generated store.
        users: Users it was generated with.
        seed: Seed it was generated with.
        retrieval_pool: Its generator's ``retrieval_pool``.

    Returns:
        The section, Markdown.
    """
    from stcrank.data.recflow.funnel_truth import RANDOM, stage_truth, stage_truth_markdown
    from stcrank.data.recflow.store import RecFlowStore
    from stcrank.data.recflow.synth import default_item_count
    from stcrank.data.recflow.world import SyntheticWorld

    world = SyntheticWorld.create(users, default_item_count(users, REPORT_FUNNEL["retrieved"], retrieval_pool), seed)
    rows = stage_truth(RecFlowStore(store), world)
    random = next(row for row in rows if row.stage == RANDOM)
    below = [row.stage for row in rows if row.stage != RANDOM and row.affinity <= random.affinity]
    lines = [
        "## Ground truth of the generated funnel",
        "",
        "Mean true affinity and effective-view probability of each stage's logged items for the request's user, "
        "over the training days, next to random items of the exposed corpus (the retrieval experiments' uniform "
        "negatives) for the same users.",
        "",
        stage_truth_markdown(rows),
        "",
    ]
    if below:
        lines.append(
            "FS-LTR's priorities and hard-negative mining assume that every stage sample is better for the user than "
            f"a random item. In this data {', '.join(below)} items are *less* liked than random exposed items: for "
            "them the cascade pairs `stage > random` teach an order that is false here, and as hard negatives they "
            "are no harder than random ones. This is the generator's retrieval stage (drawn by popularity, not "
            "personalised); `--retrieval_pool 3` generates a store whose retrieval keeps the best of three times as "
            "many popular items by noisy affinity, to check findings 1 and 2 under both (the documentation's "
            "Experiments page compares them)."
        )
    else:
        lines.append("Every stage's items are better for the user than random exposed items, as the methods assume.")
    return "\n".join(lines) + "\n"


def _write_report(
    path: Path,
    *,
    tables: Sequence[Table],
    findings: Sequence[Finding],
    header: list[str],
    missing: list[str],
    truth: str | None = None,
) -> None:
    lines = ["# RecFlow experiments", "", *header, ""]
    lines += [findings_markdown(findings), ""]
    power = seeds_needed_markdown(seeds_needed_table(tables))
    if power:
        lines += [power, ""]
    if truth:
        lines += [truth, ""]
    for table in tables:
        lines += [f"## {display_name(table.key)}: {table.title}", "", format_table(table, ALPHA)]
        differences = differences_markdown(table, ALPHA)
        if differences:
            lines += [
                f"Difference from {table.baseline} (mean of paired differences, table units) and p-value:",
                "",
                differences,
            ]
        lines += [f"![{display_name(table.key)}]({table.key}.png)", ""]
    if missing:
        lines += ["## Not run: config missing", "", *(f"- `{config}`" for config in missing), ""]
    path.write_text("\n".join(lines))


def report_recflow(
    *,
    report_config: str = DEFAULT_CONFIG,
    out: str = "runs/reports/recflow",
    data: str | None = None,
    users: int | None = None,
    days: int | None = None,
    data_seed: int = 0,
    seeds: int | None = None,
    first_seed: int = 0,
    tables: str | list[str] | None = None,
    rows: str | list[str] | None = None,
    quick: bool = False,
    threads: int | None = None,
    retrieval_pool: int = 1,
    retrieval_noise: float = DEFAULT_RETRIEVAL_NOISE,
    run: bool = True,
    retry_failed: bool = True,
    keep_checkpoints: bool = False,
    extra_args: list[str] | None = None,
) -> dict[str, Any]:
    """Run the RecFlow paper's experiments over several seeds and write its tables, plots and findings.

    Every distinct experiment config of the chosen tables is fitted and tested once per seed in this process
    (``stcrank fit`` then ``stcrank test`` on the last checkpoint), with ``--seed_everything SEED`` and the
    data module's ``seed``. Results are cached in ``<out>/results.jsonl`` by config content, seed, arguments and
    data fingerprint: running the report again only runs what is missing. Rows are compared with their table's
    baseline by a two-sided paired t-test over the seeds (pairs = the same seed on the same data).

    Args:
        report_config: The report config mapping paper tables to experiment configs.
        out: Output directory: report.md, one <table>.png per table, results.jsonl, runs/ and data/.
        data: An existing RecFlow store (the --dst of stcrank data import-recflow); by default a store is
            generated.
        users: Users of the generated store (default: 500, or 200 with --quick).
        days: Days of the generated store, the last being the test day (default: 8, or 4 with --quick).
        data_seed: Seed of the generated store.
        seeds: Seeds per config (default: 5, or 3 with --quick).
        first_seed: The first seed; the seeds are first_seed, first_seed + 1, ..., first_seed + seeds - 1.
        tables: Tables to run, comma-separated (table6,table7); default all.
        rows: Rows to run, comma-separated row names ("Rank_neg x1,FS-LTR"); each table's baseline is always
            kept for the comparisons. Default all.
        quick: The quick preset: a small generated store, 3 seeds, 1 thread, training batches of 128, and the
            test run with the fitted Trainer; finishes every table in minutes.
        threads: Torch intra-op threads during the runs (default: every core, or 1 with --quick).
        retrieval_pool: Generated store only: the generator's retrieval keeps the "retrieved" best (by true
            affinity plus noise) of --retrieval_pool times as many popular items; 1 (the default) retrieves by
            popularity alone, not personalised.
        retrieval_noise: Generated store only: noise of that personalised retrieval score.
        run: Run what is missing; false writes the report from cached results only.
        retry_failed: Run again the runs whose cached result is a failure.
        keep_checkpoints: Keep each run's checkpoints (deleted after testing by default, as they are large on
            the real data).
        extra_args: Extra arguments for every fit and test, e.g. [--trainer.accelerator=gpu].

    Returns:
        A summary: the paths written, the run counts, the missing configs and each finding's verdict.
    """
    preset = PRESETS["quick" if quick else "full"]
    seed_list = report_seeds(first_seed, seeds if seeds is not None else preset.seeds)
    config_path = report_config_path(report_config, DEFAULT_CONFIG)
    specs = select(load_report_config(config_path), split_names(tables), split_names(rows))
    out_dir = Path(out).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    store, data_text = prepare_data(
        out=out_dir,
        data=data,
        users=users if users is not None else preset.users,
        days=days if days is not None else preset.days,
        seed=data_seed,
        retrieval_pool=retrieval_pool,
        retrieval_noise=retrieval_noise,
    )
    fingerprint = data_fingerprint(store)
    configs = list(dict.fromkeys(config for spec in specs for _, config in spec.rows))
    present = [c for c in configs if c.is_file()]
    missing = [display_path(c) for c in configs if not c.is_file()]
    extra = tuple(extra_args or ())
    run_specs = [
        RunSpec(config, seed, store, (*_preset_args(config, preset), *extra))
        for seed in seed_list
        for config in present
    ]
    cache = ResultCache(out_dir / "results.jsonl")
    n_threads = threads or preset.threads or os.cpu_count() or 1
    cached = dict(cache.results)
    runner = (
        ExperimentRunner(out_dir / "runs", keep_checkpoints=keep_checkpoints, reuse_fit=preset.reuse_fit)
        if run
        else None
    )
    by_run = collect_results(run_specs, cache, fingerprint, runner, n_threads, retry_failed=retry_failed)
    results = list(by_run.values())
    built = _build_tables(specs, by_run, seed_list)
    findings = evaluate_findings({table.key: table for table in built})
    for table in built:
        plot_table(table, out_dir / f"{table.key}.png", ALPHA)
    header = [
        f"Written by `stcrank report recflow` on {dt.datetime.now().strftime('%Y-%m-%d %H:%M')}.",
        "",
        f"- Command: `{_command_line(config_path, out_dir, data, quick, tables, rows, seed_list, extra)}`",
        f"- Preset: {preset.name}; seeds: {', '.join(map(str, seed_list))}; torch threads: {n_threads}.",
        f"- Data: {data_text}; fingerprint `{fingerprint}`.",
        f"- Runs: {_run_summary(results)}; {sum(cached.get(r.key) is not r for r in results)} run now, the others "
        f"from the cache; {len(missing)} configs missing; report took {time.perf_counter() - started:.0f} s.",
        "- Statistics: mean ± sample standard deviation over seeds; a row is compared with its table's baseline "
        "by a two-sided paired t-test whose pairs are the runs of the same seed (same data, same seed); each "
        "finding's comparison states its minimum detectable effect (80% power) next to the paper's effect.",
    ]
    truth = None
    if data is None:
        truth = funnel_truth_markdown(
            store, users=users if users is not None else preset.users, seed=data_seed, retrieval_pool=retrieval_pool
        )
    _write_report(out_dir / "report.md", tables=built, findings=findings, header=header, missing=missing, truth=truth)
    print(f"report: {out_dir / 'report.md'}", file=sys.stderr)
    return {
        "report": str(out_dir / "report.md"),
        "results": str(cache.path),
        "runs": {status: sum(r.status == status for r in results) for status in ("ok", "failed")},
        "missing_configs": missing,
        "findings": {finding.number: finding.verdict for finding in findings},
    }


def _command_line(
    config: Path,
    out: Path,
    data: str | None,
    quick: bool,
    tables: str | list[str] | None,
    rows: str | list[str] | None,
    seeds: list[int],
    extra: tuple[str, ...],
) -> str:
    parts = ["stcrank", "report", "recflow", f"--report_config={display_path(config)}", f"--out={display_path(out)}"]
    if data is not None:
        parts.append(f"--data={data}")
    if quick:
        parts.append("--quick=true")
    if tables:
        parts.append(f"--tables={','.join(split_names(tables) or [])}")
    if rows:
        parts.append(f"--rows={','.join(split_names(rows) or [])}")
    parts += [f"--seeds={len(seeds)}", f"--first_seed={seeds[0]}"]
    if extra:
        parts.append(f"--extra_args=[{','.join(extra)}]")
    return shlex.join(parts)
