import statistics

import pytest

from stcrank.reports.recflow_findings import evaluate_findings, seeds_needed_markdown, seeds_needed_table
from stcrank.reports.stats import seeds_needed
from stcrank.reports.tables import Row, Table


def _row(name: str, **metrics: list[float]) -> Row:
    runs: dict[int, dict[str, float]] = {}
    for metric, values in metrics.items():
        for seed, value in enumerate(values):
            runs.setdefault(seed, {})[metric] = value
    return Row(name, f"{name}.yaml", runs)


def _noisy(values: list[float], delta: float, noise: float) -> list[float]:
    return [v + delta + noise * (-1) ** i * (i + 1) for i, v in enumerate(values)]


def test_no_effect_needs_an_mde_below_the_papers_effect():
    # Aux ranking vs Baseline on AUC: no measured change. The paper's +1% is within reach of a tight spread (no
    # effect larger than the MDE) but not of a loose one (underpowered).
    seeds = [0.70, 0.71, 0.72, 0.70, 0.71]
    for noise, wanted in ((0.0002, "no effect larger than the MDE"), (0.02, "underpowered")):
        base = _row("Baseline", auc=seeds)
        base.paper = {"auc": 0.70}
        aux = _row("Aux ranking", auc=_noisy(seeds, 0.0, noise))
        aux.paper = {"auc": 0.707}
        table = Table("table13", "t13", ["auc"], "Baseline", [base, aux])
        (check,) = evaluate_findings({"table13": table})[4].checks
        assert check.paper_effect == pytest.approx(0.01) and check.outcome == wanted, (noise, check.mde)
        differences = [a - b for a, b in zip(aux.values("auc").values(), seeds, strict=True)]
        se = statistics.stdev(differences) / 5**0.5
        assert check.mde == pytest.approx((2.7764 + 0.9410) * se / statistics.mean(seeds), rel=1e-3)
        rows = seeds_needed_table([table])
        assert rows[0]["comparisons"] == 1 and rows[0]["seeds"] == 5
        assert rows[0]["powered"] == (wanted == "no effect larger than the MDE")
        needed = seeds_needed(statistics.stdev(differences) / statistics.mean(seeds), 0.01)
        assert rows[0]["max"] == needed
    assert "seeds needed" in seeds_needed_markdown(rows)


# -- the five findings ------------------------------------------------------------------------------------------


def _shift(values: list[float], delta: float) -> list[float]:
    # A consistent shift with a little noise: significant at 3 seeds.
    return [v + delta + 0.0005 * i for i, v in enumerate(values)]


BASE = [0.50, 0.52, 0.51]


def _retrieval_tables(hard_delta: float, cascade_delta: float) -> dict[str, Table]:
    metrics = ["recflow_recall@100", "recflow_ndcg@100"]
    hard = Table("table2", "hard", metrics, "Baseline", [_row("Baseline", **dict.fromkeys(metrics, BASE))], True)
    cascade = Table("table3", "cascade", metrics, "Baseline", [_row("Baseline", **dict.fromkeys(metrics, BASE))], True)
    for name in ("Prerank_neg", "Rank_pos"):
        hard.rows.append(_row(name, **dict.fromkeys(metrics, _shift(BASE, hard_delta))))
        cascade.rows.append(_row(name, **dict.fromkeys(metrics, _shift(BASE, hard_delta + cascade_delta))))
    cascade.rows.append(_row("FS-LTR", **dict.fromkeys(metrics, _shift(BASE, hard_delta + 2 * cascade_delta))))
    return {"table2": hard, "table3": cascade}


def test_findings_one_and_two_hold_when_the_numbers_say_so():
    findings = evaluate_findings(_retrieval_tables(hard_delta=0.05, cascade_delta=0.05))
    assert findings[0].verdict == "holds" and findings[0].counts == {
        "holds": 4,
        "reversed": 0,
        "no effect larger than the MDE": 0,
        "underpowered": 0,
    }
    # Same-stage pairs (2 rows x 2 metrics) plus FS-LTR against each Table 2 row (2 x 2).
    assert findings[1].verdict == "holds" and len(findings[1].checks) == 8
    assert findings[1].checks[0].row_mean == pytest.approx(100 * (0.51 + 0.1 + 0.0005))  # percent table
    for finding in findings[2:]:
        assert finding.verdict == "not evaluated" and any("not in this report" in u for u in finding.unavailable)


def test_findings_do_not_hold_or_are_mixed_when_the_numbers_disagree():
    findings = evaluate_findings(_retrieval_tables(hard_delta=-0.05, cascade_delta=0.0))
    assert findings[0].verdict == "does not hold" and findings[0].counts["reversed"] == 4
    # Cascade rows equal hard ones: nothing significant, and without the paper's numbers nothing says an effect
    # as large as the paper's would have been seen: underpowered, not "does not hold".
    assert findings[1].verdict == "underpowered" and findings[1].counts["underpowered"] == 8
    tables = _retrieval_tables(hard_delta=0.05, cascade_delta=0.05)
    tables["table2"].rows[2] = _row("Rank_pos", **dict.fromkeys(tables["table2"].metrics, _shift(BASE, -0.05)))
    assert evaluate_findings(tables)[0].verdict == "mixed"


def test_finding_three_wants_higher_recall_and_lower_auc():
    metrics = ["auc", "recflow_recall@50"]
    table = Table("table6", "t6", metrics, "Baseline", [_row("Baseline", auc=BASE, **{"recflow_recall@50": BASE})])
    table.rows.append(_row("Rank_neg x1", auc=_shift(BASE, -0.03), **{"recflow_recall@50": _shift(BASE, 0.04)}))
    table.rows.append(Row("Rank_neg x10", "missing.yaml", missing=True))
    finding = evaluate_findings({"table6": table})[2]
    assert [(c.metric, c.claim, c.outcome) for c in finding.checks] == [
        ("auc", "lower", "holds"),
        ("recflow_recall@50", "higher", "holds"),
    ]
    assert finding.verdict == "holds"
    assert "Table 6 / Rank_neg x10: config missing" in finding.unavailable


def test_findings_four_and_five():
    metrics = ["auc", "recflow_recall@50", "recflow_ndcg@50"]
    base = dict.fromkeys(metrics, BASE)
    interplay = Table("table7", "t7", metrics, "Baseline", [_row("Baseline", **base)])
    interplay.rows.append(_row("PositiveRank", **dict.fromkeys(metrics, _shift(BASE, 0.05))))
    interplay.rows.append(_row("FS-LTR", **dict.fromkeys(metrics, _shift(BASE, 0.10))))
    aux = Table("table13", "t13", metrics, "Baseline", [_row("Baseline", **base)])
    aux.rows.append(_row("Aux ranking", **dict.fromkeys(metrics, _shift(BASE, -0.02))))
    findings = evaluate_findings({"table7": interplay, "table13": aux})
    assert [c.metric for c in findings[3].checks] == ["recflow_recall@50", "recflow_recall@50"]
    assert findings[3].verdict == "holds"
    assert [c.metric for c in findings[4].checks] == ["auc"] and findings[4].verdict == "does not hold"


def test_a_single_seed_leaves_findings_not_evaluated():
    table = Table("table13", "t", ["auc"], "Baseline", [_row("Baseline", auc=[0.7]), _row("Aux ranking", auc=[0.8])])
    assert evaluate_findings({"table13": table})[4].verdict == "not evaluated"


def test_saturated_metrics_are_left_out_of_findings():
    metrics = ["recflow_recall@100", "recflow_recall@500"]
    table = Table(
        "table2", "hard", metrics, "Baseline", [_row("Baseline", **{metrics[0]: BASE, metrics[1]: [1.0] * 3})]
    )
    table.rows.append(_row("Rank_pos", **{metrics[0]: _shift(BASE, 0.05), metrics[1]: [1.0] * 3}))
    finding = evaluate_findings({"table2": table})[0]
    assert [check.metric for check in finding.checks] == ["recflow_recall@100"]
    assert finding.verdict == "holds"
    assert "Recall@500 is constant in every run (left out)" in finding.unavailable
