import json
import math
import statistics

import pytest
import torch

from stcrank.errors import ConfigError
from stcrank.reports.stats import seeds_needed
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
        f"  - {{row: {d[0]}, baseline: A, metric: purchases, expect: {d[1]}, claim: {d[0]}"
        + (f", paper_effect: {d[2]}" if len(d) > 2 else "")
        + "}\n"
        for d in directions
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


def test_directions_get_the_four_way_verdict(tmp_path):
    directions = [("B", "up"), ("C", "up"), ("D", "up", 0.05), ("D", "up", 0.0001), ("D", "up"), ("C", "down")]
    config = config_with(tmp_path, directions)
    checked = check_directions(fake_evaluation(), config)
    assert [d["verdict"] for d in checked] == [
        "holds",
        "reversed",
        "no effect larger than the MDE",
        "underpowered",
        "underpowered",  # no paper effect to compare the MDE with
        "holds",
    ]
    # one seed: the evaluation's SE on a normal (no training randomness), the MDE is 2.80 SEs
    d = checked[2]
    assert not d["training_counted"] and d["mde"] == pytest.approx(2.8016 * d["relative_se"], rel=1e-3)
    text = directions_markdown(checked)
    assert "reversed" in text and "+5.00%" in text  # the paper's effect is printed
    assert "MDE" in tables_markdown(build_tables(fake_evaluation(), config))


def test_seeds_pair_rows_and_their_spread_sets_the_uncertainty(tmp_path):
    config = config_with(tmp_path, [("B", "up", 0.01)])
    seeds = []
    for shift in (0.02, 0.08, 0.05):  # B's effect moves from seed to seed (training randomness)
        evaluation = fake_evaluation()
        evaluation.metrics["B"] = {m: v + shift - 0.05 for m, v in evaluation.metrics["B"].items()}
        seeds.append({"focus": evaluation})
    (d,) = check_directions(seeds, config)
    assert d["seeds"] == 3 and d["training_counted"] and d["df"] == 2
    spread = statistics.stdev(d["per_seed"])
    assert d["relative_se"] == pytest.approx(spread / 3**0.5)
    assert d["between_sd"] > 0.5 * spread and d["within_se"] < 0.1 * d["relative_se"]
    # t = 2.9 on 2 degrees of freedom: not significant, and the MDE (5.4 SEs) is far above the paper's 1%
    assert d["p_value"] > 0.05 and d["verdict"] == "underpowered"
    # how many seeds the paper's 1% would need at this spread
    assert d["seeds_needed"] == seeds_needed(spread, 0.01) and d["seeds_needed"] > 100
    # one seed alone would have claimed it: the evaluation noise is tiny, the training randomness is not
    assert check_directions(seeds[:1], config)[0]["verdict"] == "holds"


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


@pytest.mark.parametrize("option", [{"workers": 0}, {"threads": 0}])
def test_workers_and_threads_must_be_positive(tmp_path, option):
    with pytest.raises(ConfigError, match="--threads and --workers must be positive"):
        report_stcrank(out=str(tmp_path), data=str(tmp_path / "unused"), **option)


def test_presets_count_the_training_randomness():
    full, quick = PRESETS["full"], PRESETS["quick"]
    assert full.sessions >= 20_000 and full.seeds >= 10 and full.visits >= 200_000
    assert 2 <= quick.seeds < full.seeds  # two seeds: the fewest that count the training randomness
    assert quick.sessions < full.sessions and quick.visits < full.visits
    assert set(quick.network) <= {"embedding_dim", "num_experts", "expert_hidden", "tower_hidden"}


def _numbers(result):
    """Everything a reader compares between two runs: tables, directions and the first seed's evaluation."""
    return json.dumps({k: result[k] for k in ("tables", "directions", "evaluation", "rows")}, sort_keys=True)


@pytest.mark.slow
def test_two_rows_end_to_end_reproducible_and_within_the_stated_uncertainty(eshop_store, tmp_path):
    options = {
        "data": str(eshop_store),
        "rows": ["single-obj", "MOC-base"],
        "quick": True,
        "sessions": 300,
        "epochs": 1,
        "seeds": 2,
    }
    result = report_stcrank(out=str(tmp_path / "a"), workers=1, **options)
    assert set(result["rows"]) == {"single-obj", "MOC-base"} and result["training_seeds"] == [0, 1]
    # Validation AUCs of the fit survive the prediction pass; the quick network overrides reach the model.
    assert set(result["rows"]["MOC-base"]["val"]) >= {"val/auc_cvr", "val/auc_vtr", "val/auc_sum"}
    report = (tmp_path / "a" / "report.md").read_text()
    assert "auc_vtr=" in report and "Paper directions" in report and "Wall time:" in report
    assert [d["row"] for d in result["directions"]] == ["MOC-base", "MOC-base"]
    assert all(d["seeds"] == 2 and d["training_counted"] and d["mde"] > 0 for d in result["directions"])
    assert json.loads((tmp_path / "a" / "report.json").read_text())["tables"][0]["comparisons"][0]["row"] == "MOC-base"
    # the closed form's paired SE is below the sampled outcome's on the same sessions
    assert all(d["se_ratio"] > 1 for d in result["directions"] if d["metric"] == "purchases")
    # The same command, seed and machine: the same numbers, whether the seeds run one after the other or side by
    # side in worker processes.
    again = report_stcrank(out=str(tmp_path / "b"), workers=2, **options)
    assert _numbers(again) == _numbers(result)
    assert again["timing"]["workers"] == 2 and "2 seed(s) at a time" in (tmp_path / "b" / "report.md").read_text()
    # Another thread count: floating-point sums in another order, so other models; the changes stay within the
    # stated uncertainty (3 combined standard errors).
    threads = report_stcrank(out=str(tmp_path / "c"), threads=2, workers=1, **options)
    for one, two in zip(result["directions"], threads["directions"], strict=True):
        assert abs(one["relative"] - two["relative"]) <= 3 * math.hypot(one["relative_se"], two["relative_se"])


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
