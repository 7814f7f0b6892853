"""Tests of ``stcrank report lcron`` (stcrank.reports.lcron)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from stcrank.cli import main
from stcrank.reports.lcron import (
    Direction,
    LossRow,
    comparisons_markdown,
    evaluate_directions,
    load_lcron_config,
    report_lcron,
    results_markdown,
)

ROOT = Path(__file__).resolve().parents[2]
REPORT_CONFIG = ROOT / "configs" / "reports" / "lcron.yaml"


def test_the_shipped_config_has_every_loss():
    config = load_lcron_config(REPORT_CONFIG)
    names = [name for name, _ in config.rows]
    assert names[:7] == ["BCE", "ICC", "RankFlow", "FS-RankNet", "FS-LambdaLoss", "ARF", "LCRON"]
    assert all(path.is_file() for _, path in config.rows)
    assert (config.baseline, config.method) == ("BCE", "LCRON")
    assert "joint_recall" in config.metrics and len(config.metrics) == 5
    (direction,) = config.directions
    assert direction.better == "LCRON" and direction.metric == "joint_recall" and len(direction.worse) == 6


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("rows: []\n", "rows: expected a mapping"),
        ("rows: {A: a.yaml}\nbaseline: A\nmethod: A\n", "metrics: expected a non-empty list"),
        ("rows: {A: a.yaml}\nmetrics: [m]\nbaseline: B\nmethod: A\n", "baseline: expected one of the row names"),
        (
            "rows: {A: a.yaml}\nmetrics: [m]\nbaseline: A\nmethod: A\ndirections: [{better: A, worse: C, metric: m}]\n",
            r"directions\[0\].better/worse",
        ),
        (
            "rows: {A: a.yaml}\nmetrics: [m]\nbaseline: A\nmethod: A\ndirections: [{better: A, worse: A, metric: x}]\n",
            r"directions\[0\].metric",
        ),
        ("rows: [", "not valid YAML"),
    ],
)
def test_config_errors_name_the_file_and_key(tmp_path, text, message):
    path = tmp_path / "report.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as info:
        load_lcron_config(path)
    assert str(path) in str(info.value)


def row(name: str, values: list[float], metric: str = "joint_recall") -> LossRow:
    return LossRow(name, f"{name}.yaml", runs={seed: {metric: v} for seed, v in enumerate(values)})


def test_summary_is_mean_and_standard_error():
    mean, se, n = row("A", [0.1, 0.2, 0.6]).summary("joint_recall")
    assert (mean, n) == (pytest.approx(0.3), 3)
    assert se == pytest.approx(math.sqrt(0.07) / math.sqrt(3))  # sample variance 0.07
    assert math.isnan(row("A", [0.5]).summary("joint_recall")[1])


def test_directions_verdicts():
    rows = {
        "M": row("M", [0.80, 0.82, 0.81]),
        "A": row("A", [0.70, 0.71, 0.72]),
        "B": row("B", [0.90, 0.93, 0.91]),
        "C": row("C", [0.79, 0.84, 0.80]),
        "E": LossRow("E", "E.yaml", failures={0: "boom"}),
    }
    holds = evaluate_directions(rows, [Direction("M > A", "M", ("A",), "joint_recall")])[0]
    assert holds.verdict == "holds" and holds.comparisons[0].outcome == "for"
    against = evaluate_directions(rows, [Direction("M > A, B", "M", ("A", "B"), "joint_recall")])[0]
    assert against.verdict == "does not hold" and [c.outcome for c in against.comparisons] == ["for", "against"]
    unclear = evaluate_directions(rows, [Direction("M > C", "M", ("C",), "joint_recall")])[0]
    assert unclear.verdict == "not shown" and unclear.comparisons[0].outcome == "n.s."
    missing = evaluate_directions(rows, [Direction("M > A, E", "M", ("A", "E"), "joint_recall")])[0]
    assert missing.verdict == "not shown" and missing.unavailable == ["E: no results"]
    single = {"M": row("M", [0.8]), "A": row("A", [0.7])}
    assert evaluate_directions(single, [Direction("M > A", "M", ("A",), "joint_recall")])[0].verdict == "not evaluated"


def test_markdown_tables():
    rows = [row("BCE", [0.70, 0.72]), row("LCRON", [0.80, 0.83]), LossRow("ICC", "icc.yaml", missing=True)]
    table = results_markdown(rows, ["joint_recall"])
    assert "| BCE | 0.7100 ± 0.0100 | 2 |" in table
    assert "| LCRON | **0.8150 ± 0.0150** | 2 |" in table
    assert "| ICC | not run: config missing |" in table
    tests = comparisons_markdown(rows, ["joint_recall"], "BCE")
    # Differences 0.10 and 0.11: mean 0.105, t = 0.105 / (0.00707 / sqrt 2) = 21, p = 0.0303.
    assert "| LCRON | +0.1050 (0.0303)† |" in tests
    assert "ICC" not in tests
    assert comparisons_markdown(rows, ["joint_recall"], "ICC") == "ICC has no results: no comparison."


@pytest.mark.slow
def test_quick_report_at_tiny_size_runs_caches_and_explains(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    out = tmp_path / "report"
    summary = report_lcron(quick=True, users=20, days=3, seeds=2, losses="ICC", out=str(out))
    assert summary["runs"] == {"ok": 6, "failed": 0}  # BCE, ICC and LCRON, two seeds each
    text = (out / "report.md").read_text()
    for name in ("BCE", "ICC", "LCRON"):
        assert f"| {name} | " in text
    assert "| FS-RankNet |" not in text
    assert "--data.positives rank_top" in text and "### Against BCE" in text and "### Against LCRON" in text
    assert "## Ground truth of the generated funnel" in text and "Oracle" in text
    assert "LCRON beats every baseline on joint recall" in text
    verdict = summary["directions"]["LCRON beats every baseline on joint recall (the paper's main claim)"]
    assert verdict in ("holds", "does not hold", "not shown")
    assert "Not available: RankFlow: not in the report" in text
    lines = (out / "results.jsonl").read_text().splitlines()
    assert len(lines) == 6 and all(json.loads(line)["status"] == "ok" for line in lines)
    # Everything is cached: writing the report again runs nothing.
    again = report_lcron(quick=True, users=20, days=3, seeds=2, losses="ICC", out=str(out), run=False)
    assert again["runs"] == summary["runs"]
    assert len((out / "results.jsonl").read_text().splitlines()) == 6


def test_unknown_loss_is_named(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    with pytest.raises(ValueError, match=r"--losses: unknown \['LCRN'\]"):
        report_lcron(losses="LCRN", out=str(tmp_path), run=False)


def test_command_line(capsys):
    main(["report"])
    assert "lcron" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main(["report", "lcron", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for option in ("--quick", "--losses", "--seeds", "--data", "--out", "--positives", "--run"):
        assert option in out
