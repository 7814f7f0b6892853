from stcrank.commands.results import format_results


def test_metrics_are_shown_once_by_set_with_cut_offs_as_columns():
    metrics = {"auc": 0.66, "logloss": 0.62, "recall@50": 0.5, "recall@100": 0.8, "ndcg@50": 0.2, "extra": 1.0}
    text = format_results(
        "title", metrics, {"exposures": ["auc", "logloss"], "candidates": ["recall@50", "ndcg@50", "recall@100"]}
    )
    lines = text.splitlines()
    assert lines[0] == "title"
    assert lines[2] == "exposures" and lines[3].split() == ["auc", "0.6600"]
    header = next(line for line in lines if line.startswith("candidates"))
    assert header.split() == ["candidates", "@50", "@100"]
    assert next(line for line in lines if line.strip().startswith("recall")).split() == ["recall", "0.5000", "0.8000"]
    assert next(line for line in lines if line.strip().startswith("ndcg")).split() == ["ndcg", "0.2000"]
    assert "other" in lines and any(line.split() == ["extra", "1.0000"] for line in lines)


def test_nan_is_explained():
    text = format_results("t", {"auc": float("nan")}, {"exposures": ["auc"]}, footer="metrics: x.csv")
    assert "nan" in text and "labels of both classes" in text and text.endswith("metrics: x.csv")


def test_counts_of_left_out_groups_are_whole_numbers():
    metrics = {"gauc_user": 0.5191, "gauc_user_excluded": 67.0}
    lines = format_results("t", metrics, {"exposures": ["gauc_user", "gauc_user_excluded"]}).splitlines()
    assert ["gauc_user", "0.5191"] in [line.split() for line in lines]
    assert ["gauc_user_excluded", "67"] in [line.split() for line in lines]
