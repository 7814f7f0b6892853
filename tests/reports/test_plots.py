from matplotlib.image import imread

from stcrank.reports.plots import plot_table
from stcrank.reports.tables import Row, Table

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _table(metrics, rows):
    return Table("table6", "Ranking: extra negatives", metrics, "Baseline", rows)


def test_plot_writes_one_png_with_a_panel_grid(tmp_path):
    metrics = ["auc", "logloss", "recflow_recall@50", "recflow_ndcg@50", "recflow_recall@100", "recflow_ndcg@100", "x"]
    runs = {seed: {m: 0.5 + 0.01 * seed for m in metrics} for seed in range(3)}
    better = {seed: {m: 0.6 + 0.01 * seed for m in metrics} for seed in range(3)}
    rows = [
        Row("Baseline", "b.yaml", runs),
        Row("Better", "x.yaml", better),
        Row("Missing", "m.yaml", missing=True),
        Row("Broken", "f.yaml", failures={0: "boom"}),
    ]
    path = plot_table(_table(metrics, rows), tmp_path / "plots" / "table6.png")
    assert path.read_bytes().startswith(PNG_MAGIC)
    height, width, _ = imread(path).shape
    assert width > height > 100  # 3 columns x 3 lines of panels


def test_plot_survives_a_table_without_results(tmp_path):
    rows = [Row("Baseline", "b.yaml"), Row("Other", "o.yaml", missing=True)]
    path = plot_table(_table(["auc"], rows), tmp_path / "empty.png")
    assert path.read_bytes().startswith(PNG_MAGIC)


def test_plot_with_single_seed_has_no_error_bars(tmp_path):
    rows = [Row("Baseline", "b.yaml", {0: {"auc": 0.7}}), Row("Other", "o.yaml", {0: {"auc": 0.72}})]
    path = plot_table(_table(["auc"], rows), tmp_path / "one.png")
    assert path.stat().st_size > 1000
