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
