import json
import math
from pathlib import Path
from typing import ClassVar

import pytest

from stcrank.reports import recflow
from stcrank.reports.recflow import load_report_config, report_recflow, select
from stcrank.reports.runner import ExperimentRunner, RunSpec

ROOT = Path(__file__).resolve().parents[2]
REPORT_CONFIG = ROOT / "configs" / "reports" / "recflow.yaml"
DIN_BASELINE = ROOT / "configs" / "experiments" / "recflow" / "rank" / "din_baseline.yaml"


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _cells(markdown: str, name: str) -> list[str]:
    line = next(line for line in markdown.splitlines() if line.startswith(f"| {name} |"))
    return [cell.strip() for cell in line.strip().strip("|").split("|")][1:]


def _section(markdown: str, heading: str) -> str:
    start = markdown.index(heading)
    end = markdown.find("\n## ", start + 1)
    return markdown[start : end if end >= 0 else None]


# -- the report config -------------------------------------------------------------------------------------------


def test_the_shipped_report_config_has_every_paper_table():
    specs = {spec.key: spec for spec in load_report_config(REPORT_CONFIG)}
    assert set(specs) == {f"table{n}" for n in (2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14)}
    assert {key for key, spec in specs.items() if spec.percent} == {"table2", "table3", "table9", "table10"}
    assert specs["table6"].rows[0] == ("Baseline", DIN_BASELINE)
    assert all(spec.baseline in dict(spec.rows) for spec in specs.values())
    distinct = {config for spec in specs.values() for _, config in spec.rows}
    assert len(distinct) == 65


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tables: []\n", "tables: expected a mapping"),
        ("tables:\n  t:\n    rows: {A: a.yaml}\n    baseline: A\n", r"tables.t.metrics: expected a non-empty list"),
        ("tables:\n  t:\n    metrics: [auc]\n    baseline: A\n", r"tables.t.rows: expected a mapping"),
        ("tables:\n  t:\n    metrics: [auc]\n    rows: {A: a.yaml}\n    baseline: B\n", r"tables.t.baseline"),
        ("tables:\n  t:\n    metrics: [auc]\n    rows: {A: a.yaml}\n    baseline: A\n    units: pc\n", "units"),
        ("tables: [", "not valid YAML"),
    ],
)
def test_report_config_errors_name_the_file_and_key(tmp_path, text, message):
    path = _write(tmp_path / "report.yaml", text)
    with pytest.raises(ValueError, match=message) as error:
        load_report_config(path)
    assert str(path) in str(error.value)


def test_select_keeps_the_baseline_and_rejects_unknown_names():
    specs = load_report_config(REPORT_CONFIG)
    chosen = select(specs, ["table6", "table7"], None)
    assert [spec.key for spec in chosen] == ["table6", "table7"]
    rows = select(specs, ["table6", "table7"], ["FS-LTR"])
    assert [spec.key for spec in rows] == ["table7"]
    assert [name for name, _ in rows[0].rows] == ["Baseline", "FS-LTR"]
    with pytest.raises(ValueError, match=r"unknown tables \['table99'\]"):
        select(specs, ["table99"], None)
    with pytest.raises(ValueError, match=r"unknown rows \['Nope'\]"):
        select(specs, ["table6"], ["Nope"])


def test_the_shipped_config_carries_the_papers_numbers():
    specs = {spec.key: spec for spec in load_report_config(ROOT / "configs" / "reports" / "recflow.yaml")}
    assert all(spec.paper.get(spec.baseline) for spec in specs.values())
    assert specs["table2"].paper["Prerank_neg"]["recflow_recall@100"] == 0.575
    assert "recflow_recall@50" not in specs["table7"].paper["FS-LTR"]  # lost in print


@pytest.mark.slow
def test_report_stores_have_more_candidates_than_the_largest_cut_off(tmp_path):
    """Every reported Recall/NDCG cut-off can move: the quick store's corpus and candidate lists exceed them."""
    import numpy as np

    from stcrank.data.recflow.schema import STAGE_CODE
    from stcrank.data.recflow.store import RecFlowStore
    from stcrank.reports.recflow import PRESETS, prepare_data

    specs = load_report_config(ROOT / "configs" / "reports" / "recflow.yaml")

    def largest(group: str) -> int:
        cuts = [
            int(m.split("@")[1]) for spec in specs for m in spec.metrics if "@" in m and group in str(spec.rows[0][1])
        ]
        return max(cuts)

    preset = PRESETS["quick"]
    store_path, _ = prepare_data(out=tmp_path, data=None, users=preset.users, days=preset.days, seed=0)
    store = RecFlowStore(store_path)
    test_day = store.days[-1]
    assert len(np.unique(store.exposed_corpus(test_day))) > largest("retrieval")
    counts = np.diff(store.stage_offsets(test_day), axis=1)
    ranking = sum(counts[:, STAGE_CODE[s]] for s in ("realshow", "rerank_pos", "rerank_neg", "rank_pos", "rank_neg"))
    assert int(ranking.min()) > largest("/rank/")
    assert int((ranking + counts[:, STAGE_CODE["coarse_neg"]]).min()) > largest("coarse")
    # The full preset's store is larger in users and days than the quick one.
    assert PRESETS["full"].users >= preset.users and PRESETS["full"].days >= preset.days


# -- the whole report with a stand-in runner ---------------------------------------------------------------------


class FakeExperimentRunner:
    calls: ClassVar[list[tuple[str, int]]] = []

    def __init__(self, workdir, keep_checkpoints=False, reuse_fit=False):
        self.reuse_fit = reuse_fit

    def __call__(self, spec: RunSpec, key: str):
        FakeExperimentRunner.calls.append((spec.config.stem, spec.seed))
        if spec.config.stem == "broken":
            raise RuntimeError("ValueError: boom")
        # Extra negatives: recall up and AUC down; the auxiliary loss: AUC down; all consistently across seeds.
        seed = spec.seed
        auc_shift, recall_shift = {"base": (0.0, 0.0), "neg": (-0.025, 0.05), "aux": (-0.001, 0.0)}[spec.config.stem]
        metrics = {
            "auc": 0.70 + 0.01 * seed + auc_shift * (1 + 0.01 * seed),
            "logloss": 0.6,
            "recflow_recall@50": 0.40 + 0.02 * seed + recall_shift * (1 + 0.01 * seed),
        }
        return metrics, {"fit": 1.0, "test": 0.5}


@pytest.fixture
def fake_runner(monkeypatch):
    FakeExperimentRunner.calls = []
    monkeypatch.setattr(recflow, "ExperimentRunner", FakeExperimentRunner)
    return FakeExperimentRunner


def _report_config(tmp_path: Path) -> Path:
    for name in ("base", "neg", "broken", "aux"):
        _write(tmp_path / "exp" / f"{name}.yaml", f"# {name}\n")
    return _write(
        tmp_path / "report.yaml",
        """tables:
  table6:
    title: Extra negatives
    metrics: [auc, logloss, recflow_recall@50]
    baseline: Baseline
    rows:
      Baseline: exp/base.yaml
      Rank_neg x1: exp/neg.yaml
      Rank_neg x10: exp/not_written_yet.yaml
      All x1: exp/broken.yaml
  table13:
    title: Auxiliary loss
    metrics: [auc]
    baseline: Baseline
    rows:
      Baseline: exp/base.yaml
      Aux ranking: exp/aux.yaml
""",
    )


def test_report_runs_caches_and_writes_tables_plots_and_findings(tmp_path, recflow_store, fake_runner):
    config, out = _report_config(tmp_path), tmp_path / "out"
    summary = report_recflow(report_config=str(config), out=str(out), data=str(recflow_store), seeds=3)
    # Each distinct config once per seed (the baseline is shared by both tables), seed-major.
    assert fake_runner.calls[:4] == [("base", 0), ("neg", 0), ("broken", 0), ("aux", 0)]
    assert len(fake_runner.calls) == 12
    assert summary["runs"] == {"ok": 9, "failed": 3}
    assert summary["missing_configs"] == [str(tmp_path / "exp" / "not_written_yet.yaml")]
    assert summary["findings"][3] == "holds" and summary["findings"][5] == "does not hold"
    assert "MDE" in (out / "report.md").read_text()
    report = (out / "report.md").read_text()
    table6 = _section(report, "## Table 6")
    assert _cells(table6, "Baseline")[0] == "**0.710 ± 0.010**"
    assert _cells(table6, "Rank_neg x1")[0].endswith("†↓") and _cells(table6, "Rank_neg x1")[2].endswith("†↑")
    assert _cells(table6, "Rank_neg x10")[0] == "not run: config missing"
    assert _cells(table6, "All x1")[0] == "failed: ValueError: boom"
    assert "all metrics as fractions" in table6
    assert "![Table 6](table6.png)" in table6
    assert "### 3. Extra stage negatives" in report and "**holds**" in _section(report, "### 3.")
    assert "not_written_yet.yaml" in _section(report, "## Not run: config missing")
    assert (out / "table6.png").stat().st_size > 0 and (out / "table13.png").stat().st_size > 0
    lines = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(lines) == 12 and {line["status"] for line in lines} == {"ok", "failed"}

    # Again: only the failures run again; with retry_failed=false, nothing runs.
    fake_runner.calls = []
    report_recflow(report_config=str(config), out=str(out), data=str(recflow_store), seeds=3)
    assert sorted(fake_runner.calls) == [("broken", 0), ("broken", 1), ("broken", 2)]
    fake_runner.calls = []
    report_recflow(report_config=str(config), out=str(out), data=str(recflow_store), seeds=3, retry_failed=False)
    assert fake_runner.calls == []


def test_report_selection_and_collect_only(tmp_path, recflow_store, fake_runner):
    config, out = _report_config(tmp_path), tmp_path / "out"
    report_recflow(report_config=str(config), out=str(out), data=str(recflow_store), seeds=2, tables="table13")
    assert sorted(fake_runner.calls) == [("aux", 0), ("aux", 1), ("base", 0), ("base", 1)]
    assert not (out / "table6.png").exists()
    # --run false writes the report from the cache; a third seed shows as (n=2) where it never ran.
    fake_runner.calls = []
    report_recflow(
        report_config=str(config), out=str(out), data=str(recflow_store), seeds=3, tables="table13,table6", run=False
    )
    assert fake_runner.calls == []
    report = (out / "report.md").read_text()
    assert _cells(_section(report, "## Table 13"), "Aux ranking")[0].endswith("(n=2)")
    assert _cells(_section(report, "## Table 6"), "Rank_neg x1")[0] == "not run yet"


def test_report_rejects_a_directory_that_is_not_a_store(tmp_path, fake_runner):
    with pytest.raises(FileNotFoundError, match="not a RecFlow store"):
        report_recflow(report_config=str(_report_config(tmp_path)), out=str(tmp_path / "out"), data=str(tmp_path))


# -- the real thing ----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_report_runs_the_din_baseline_for_two_seeds(tmp_path, recflow_store):
    config = _write(
        tmp_path / "report.yaml",
        f"""tables:
  table7:
    title: Ranking (DIN) interplay
    metrics: [auc, logloss, recflow_recall@50, recflow_ndcg@50, recflow_recall@100, recflow_ndcg@100]
    baseline: Baseline
    rows:
      Baseline: {DIN_BASELINE}
      FS-LTR: {tmp_path / "no_such_config.yaml"}
""",
    )
    out = tmp_path / "out"
    summary = report_recflow(report_config=str(config), out=str(out), data=str(recflow_store), seeds=2, threads=1)
    assert summary["runs"] == {"ok": 2, "failed": 0}
    table = _section((out / "report.md").read_text(), "## Table 7")
    cells = _cells(table, "Baseline")
    assert len(cells) == 6 and all(" ± " in cell for cell in cells)
    assert _cells(table, "FS-LTR")[0] == "not run: config missing"
    assert "2 seeds (0, 1)" in table
    results = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["seed"] for r in results] == [0, 1]
    assert all(0.0 < r["metrics"]["auc"] < 1.0 and math.isfinite(r["metrics"]["logloss"]) for r in results)
    assert results[0]["metrics"] != results[1]["metrics"]  # the seed changes the run
    assert not list(out.rglob("*.ckpt"))  # checkpoints are removed once tested
    # Testing with the fitted Trainer (the quick preset's way) gives the metrics of `stcrank test`.
    spec = RunSpec(DIN_BASELINE, 0, recflow_store)
    metrics, _ = ExperimentRunner(tmp_path / "reuse", reuse_fit=True)(spec, "reuse")
    # The in-memory and the reloaded model may differ in the last float32 bit of a score; on a test day of ~1e6
    # (positive, negative) pairs, one near-tied pair flipping moves the AUC by ~1e-6.
    assert metrics == pytest.approx(results[0]["metrics"], rel=1e-6, abs=5e-6)
