import json

import pytest
import torch

from stcrank.reports.stcrank import (
    DEFAULT_CONFIG,
    PRESETS,
    build_tables,
    check_directions,
    directions_markdown,
    load_report_config,
    report_stcrank,
    tables_markdown,
)
from stcrank.simulation.evaluation import Evaluation


def fake_evaluation():
    g = torch.Generator().manual_seed(0)
    base = torch.rand(4000, generator=g)
    metrics = {}
    for name, shift in {"A": 0.0, "B": 0.05, "C": -0.05, "D": 0.0}.items():
        values = base + shift + 0.01 * torch.rand(4000, generator=g)
        metrics[name] = {m: values for m in ("purchases", "ipv", "depth", "gmv", "return_prob")}
    return Evaluation(metrics, ("x",), {}, {})


def config_with(tmp_path, directions):
    (tmp_path / "c.yaml").write_text("model: {}\n")
    rows = "".join(f"  - {{id: {r}, config: c.yaml, ensemble: {{cvr: 1.0}}}}\n" for r in "ABCD")
    dirs = "".join(
        f"  - {{row: {r}, baseline: A, metric: purchases, expect: {e}, claim: {r}}}\n" for r, e in directions
    )
    table = "tables:\n  - name: t\n    comparisons:\n      - {row: B, baseline: A, change: more}\n"
    (tmp_path / "r.yaml").write_text("rows:\n" + rows + table + "directions:\n" + dirs)
    return load_report_config(tmp_path / "r.yaml")


def test_shipped_config_has_the_moc_rows():
    config = load_report_config(DEFAULT_CONFIG)
    assert [r.id for r in config.rows] == [
        "single-obj",
        "MOC-base",
        "MOC-1",
        "vtr-2s",
        "SDR-1",
        "SDR-2",
        "SDR-3",
        "MOC-3",
        "MSC-1",
        "MSC-1-exact",
        "MSC-2",
    ]
    rows = {r.id: r for r in config.rows}
    assert rows["MOC-3"].tune is not None and config.rows[0].ensemble == {"cvr": 1.0}
    assert rows["MSC-1"].ensemble_of == "MOC-3" and rows["MSC-2"].e_policy["predictor"]["config"].is_file()
    assert {t.get("kind", "comparison") for t in config.tables} >= {"category_gain", "depth_at_purchase", "hit_rate"}


def test_directions_verdicts_use_the_paired_z(tmp_path):
    config = config_with(tmp_path, [("B", "up"), ("C", "up"), ("D", "up"), ("C", "down")])
    verdicts = [d["verdict"] for d in check_directions(fake_evaluation(), config)]
    assert verdicts == ["holds", "reversed", "not significant", "holds"]
    text = directions_markdown(check_directions(fake_evaluation(), config))
    assert "reversed" in text


def test_tables_hold_a_b_and_paired_deltas(tmp_path):
    config = config_with(tmp_path, [])
    tables = build_tables(fake_evaluation(), config)
    cell = tables[0]["comparisons"][0]["purchases"]
    assert cell["delta"] == pytest.approx(cell["b"] - cell["a"])
    assert cell["delta_se"] > 0
    assert "| B | A | more |" in tables_markdown(tables)


def test_bad_configs_are_reported(tmp_path):
    (tmp_path / "r.yaml").write_text("rows:\n  - {id: A, config: missing.yaml, ensemble: {cvr: 1}}\n")
    with pytest.raises(ValueError, match="not found"):
        load_report_config(tmp_path / "r.yaml")
    (tmp_path / "c.yaml").write_text("x: 1\n")
    (tmp_path / "r.yaml").write_text("rows:\n  - {id: A, config: c.yaml}\n")
    with pytest.raises(ValueError, match="exactly one"):
        load_report_config(tmp_path / "r.yaml")
    (tmp_path / "r.yaml").write_text("rows:\n  - {id: A, config: c.yaml, ensemble_of: B}\n")
    with pytest.raises(ValueError, match="no earlier row"):
        load_report_config(tmp_path / "r.yaml")
    (tmp_path / "r.yaml").write_text(
        "rows:\n  - {id: A, config: c.yaml, ensemble: {cvr: 1}}\ntables:\n  - {name: t, kind: nope, row: A}\n"
    )
    with pytest.raises(ValueError, match="kind must be one of"):
        load_report_config(tmp_path / "r.yaml")


def test_presets_keep_full_runs_realistic():
    assert PRESETS["full"].sessions >= 20_000 and not PRESETS["full"].network
    quick = PRESETS["quick"]
    assert quick.sessions < PRESETS["full"].sessions and quick.visits < PRESETS["full"].visits
    assert set(quick.network) <= {"embedding_dim", "num_experts", "expert_hidden", "tower_hidden"}


@pytest.mark.slow
def test_two_rows_end_to_end(eshop_store, tmp_path):
    result = report_stcrank(
        out=str(tmp_path),
        data=str(eshop_store),
        rows=["single-obj", "MOC-base"],
        quick=True,
        sessions=200,
        epochs=1,
    )
    assert set(result["rows"]) == {"single-obj", "MOC-base"}
    # Validation AUCs of the fit survive the prediction pass; the quick network overrides reach the model.
    assert set(result["rows"]["MOC-base"]["val"]) >= {"val/auc_cvr", "val/auc_vtr", "val/auc_sum"}
    assert "auc_vtr=" in (tmp_path / "report.md").read_text()
    assert [d["row"] for d in result["directions"]] == ["MOC-base", "MOC-base"]
    assert json.loads((tmp_path / "report.json").read_text())["tables"][0]["comparisons"][0]["row"] == "MOC-base"
    assert "Paper directions" in (tmp_path / "report.md").read_text()


def test_explore_stage_items_use_the_explore_evaluation(tmp_path):
    (tmp_path / "c.yaml").write_text("model: {}\n")
    rows = "".join(f"  - {{id: {r}, config: c.yaml, ensemble: {{cvr: 1.0}}}}\n" for r in "ABCD")
    tables = (
        "tables:\n  - name: t\n    stage: explore\n    metrics: [purchases]\n    comparisons:\n"
        "      - {row: C, baseline: A}\n"
    )
    dirs = "directions:\n  - {row: B, baseline: A, metric: purchases, expect: up, stage: explore, claim: x}\n"
    (tmp_path / "r.yaml").write_text("rows:\n" + rows + tables + dirs)
    config = load_report_config(tmp_path / "r.yaml")
    evaluations = {"focus": fake_evaluation(), "explore": fake_evaluation()}
    evaluations["explore"].metrics["B"] = evaluations["explore"].metrics["C"]  # B falls in the explore stage
    assert check_directions(evaluations, config)[0]["verdict"] == "reversed"
    table = build_tables(evaluations, config)[0]
    assert table["metrics"] == ["purchases"] and set(table["comparisons"][0]) >= {"purchases"}
    assert "ipv" not in table["comparisons"][0]
