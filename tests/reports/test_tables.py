import math
import re

import pytest

from stcrank.reports.tables import (
    Row,
    Table,
    compare,
    constant_metrics,
    differences_markdown,
    display_name,
    format_table,
    higher_is_better,
    metric_label,
    metric_scale,
)


def _row(name, values, failures=None, missing=False):
    """values: metric -> list of per-seed values (seeds 0..n-1)."""
    runs = {}
    for metric, per_seed in values.items():
        for seed, value in enumerate(per_seed):
            runs.setdefault(seed, {})[metric] = value
    return Row(name, f"configs/{name}.yaml", runs, dict(failures or {}), missing)


def _table(rows, metrics=("auc", "logloss"), percent=False):
    return Table("table6", "Ranking: extra negatives", list(metrics), "Baseline", rows, percent)


def _cells(markdown, name):
    line = next(line for line in markdown.splitlines() if line.startswith(f"| {name} |"))
    return [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip().strip("|"))][1:]


BASELINE = {"auc": [0.70, 0.72, 0.71], "logloss": [0.60, 0.59, 0.61]}


def test_labels_names_and_directions():
    assert display_name("table2") == "Table 2" and display_name("extra") == "extra"
    assert metric_label("recflow_recall@100") == "Recall@100"
    assert metric_label("recflow_ndcg@50") == "NDCG@50"
    assert metric_label("auc") == "AUC" and metric_label("logloss") == "LogLoss"
    assert metric_label("ndcg@10") == "ndcg@10"
    assert not higher_is_better("logloss") and higher_is_better("auc") and higher_is_better("recflow_ndcg@50")
    assert metric_scale("recflow_recall@100", percent=True) == 100.0
    assert metric_scale("auc", percent=True) == 1.0
    assert metric_scale("recflow_recall@100", percent=False) == 1.0


def test_cells_show_mean_and_sample_std_with_best_in_bold():
    better = _row("Better", {"auc": [0.75, 0.765, 0.76], "logloss": [0.58, 0.57, 0.585]})
    markdown = format_table(_table([_row("Baseline", BASELINE), better]))
    assert "| Method | AUC | LogLoss |" in markdown
    # Baseline AUC: mean 0.71, sample std 0.01.
    assert _cells(markdown, "Baseline")[0] == "0.710 ± 0.010"
    # Better is best on both columns: highest AUC and lowest LogLoss.
    auc, logloss = _cells(markdown, "Better")
    assert auc.startswith("**0.758 ± 0.008**") and logloss.startswith("**0.578 ± 0.008**")
    assert "**" not in _cells(markdown, "Baseline")[1]


def test_significant_rows_are_marked_with_their_direction():
    # Same seeds, consistent shifts: AUC clearly higher (better), LogLoss clearly higher (worse).
    shifted = _row("Shifted", {"auc": [0.75, 0.77, 0.765], "logloss": [0.70, 0.695, 0.715]})
    noisy = _row("Noisy", {"auc": [0.75, 0.68, 0.72], "logloss": [0.55, 0.66, 0.60]})
    markdown = format_table(_table([_row("Baseline", BASELINE), shifted, noisy]))
    auc, logloss = _cells(markdown, "Shifted")
    assert auc.endswith("†↑") and logloss.endswith("†↓")
    assert not any("†" in cell for cell in _cells(markdown, "Noisy"))
    assert not any("†" in cell for cell in _cells(markdown, "Baseline"))
    assert compare(shifted, _row("Baseline", BASELINE), "auc").p_value < 0.05


def test_percent_tables_scale_recall_and_ndcg_only():
    rows = [
        _row("Baseline", {"recflow_recall@100": [0.00461, 0.00470, 0.00452], "auc": [0.7, 0.7, 0.7]}),
        _row("Other", {"recflow_recall@100": [0.00575, 0.00580, 0.00570], "auc": [0.6, 0.6, 0.61]}),
    ]
    markdown = format_table(_table(rows, metrics=("recflow_recall@100", "auc"), percent=True))
    assert _cells(markdown, "Baseline")[0] == "0.461 ± 0.009"
    assert _cells(markdown, "Baseline")[1].startswith("**0.700")
    assert "percent (%)" in markdown.splitlines()[0]
    fractions = format_table(_table(rows, metrics=("recflow_recall@100",)))
    assert _cells(fractions, "Baseline")[0] == "0.005 ± 0.000"
    assert "as fractions" in fractions.splitlines()[0]


def test_missing_failed_pending_and_partial_rows():
    rows = [
        _row("Baseline", BASELINE),
        _row("Missing", {}, missing=True),
        _row("Broken", {}, failures={0: "ValueError: bad | value\nsecond line", 1: "ValueError: bad"}),
        _row("Pending", {}),
        _row("Partial", {"auc": [0.8, 0.81]}, failures={2: "RuntimeError: out of memory"}),
    ]
    markdown = format_table(_table(rows))
    assert _cells(markdown, "Missing")[0] == "not run: config missing"
    assert _cells(markdown, "Broken")[0].startswith("failed: ValueError: bad \\| value second line")
    assert _cells(markdown, "Pending")[0] == "not run yet"
    assert _cells(markdown, "Partial")[0].endswith("(n=2)")
    assert _cells(markdown, "Partial")[1] == "–"
    assert "- Partial, seed 2: failed: RuntimeError: out of memory" in markdown
    assert "3 seeds (0, 1, 2)" in markdown


def test_single_seed_shows_no_std():
    markdown = format_table(_table([_row("Baseline", {"auc": [0.7], "logloss": [0.6]})]))
    assert _cells(markdown, "Baseline") == ["0.700", "0.600"]


def test_differences_table_reports_paired_differences_and_p_values():
    shifted = _row("Shifted", {"auc": [0.75, 0.77, 0.765], "logloss": [0.60, 0.59, 0.61]})
    markdown = differences_markdown(_table([_row("Baseline", BASELINE), shifted, _row("Missing", {}, missing=True)]))
    auc, logloss = _cells(markdown, "Shifted")
    # Differences 0.05, 0.05, 0.055: t = 31 with 2 df, p = 1 - 31 / sqrt(963) = 0.00104.
    assert auc == "+0.052 (p=**0.001**)"
    assert logloss == "+0.000 (p=1.000)"
    assert "Missing" not in markdown
    assert differences_markdown(_table([_row("Baseline", {}), shifted])) == ""


def test_comparison_pairs_only_common_seeds():
    baseline = Row("Baseline", "b.yaml", {0: {"auc": 0.7}, 1: {"auc": 0.71}, 2: {"auc": 0.72}})
    other = Row("Other", "o.yaml", {1: {"auc": 0.75}, 2: {"auc": 0.77}, 3: {"auc": 0.9}})
    test = compare(other, baseline, "auc")
    assert test.n == 2 and test.mean_difference == pytest.approx(0.045)
    assert math.isnan(compare(other, Row("Empty", "e.yaml"), "auc").p_value)


def test_a_metric_with_one_value_in_every_run_is_flagged():
    rows = [
        _row("Baseline", {"auc": [0.7, 0.71], "recflow_recall@500": [1.0, 1.0]}),
        _row("Other", {"auc": [0.72, 0.73], "recflow_recall@500": [1.0, 1.0]}),
    ]
    table = _table(rows, metrics=("auc", "recflow_recall@500"))
    assert constant_metrics(table) == ["recflow_recall@500"]
    markdown = format_table(table)
    assert "Recall@500: the same value in every run" in markdown
    assert _cells(markdown, "Baseline")[1] == "1.000 ± 0.000"  # a tie of every row is not bold
    assert constant_metrics(_table([_row("Baseline", {"auc": [0.7]})], metrics=("auc",))) == []
