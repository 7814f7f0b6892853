import math

import pytest
import torch

from stcrank.reports.msc import (
    category_gain_table,
    depth_at_purchase_table,
    msc_table_markdown,
    rerank_analysis,
)
from stcrank.simulation.evaluation import Evaluation
from stcrank.simulation.model_policy import build_reranker


def evaluation():
    base = {"purchases": torch.tensor([1.0, 0.0, 1.0, 0.0])}
    category = {
        "A": torch.tensor([[1, 0], [0, 0], [0, 1], [0, 0]]),
        "B": torch.tensor([[2, 0], [1, 0], [0, 1], [0, 0]]),
    }
    depth = {
        "A": (torch.tensor([0, 0, 1]), torch.tensor([2, 4, 6])),
        "B": (torch.tensor([0, 0, 1, 1]), torch.tensor([3, 5, 6, 10])),
    }
    return Evaluation({"A": base, "B": base}, ("shoes", "socks"), depth, category)


def test_category_gain_by_hand():
    rows = category_gain_table(evaluation(), "B", "A", [4.0, 0.3])
    assert [r["category"] for r in rows] == ["shoes", "socks"]
    assert rows[0]["delta"] == pytest.approx(0.5) and rows[0]["share"] == pytest.approx(1.0)
    assert rows[0]["involvement"] == 4.0 and rows[1]["delta"] == 0.0
    text = msc_table_markdown({"title": "T6", "kind": "category_gain", "row": "B", "baseline": "A", "rows": rows})
    assert "| shoes | 4 | +0.5000" in text


def test_depth_at_purchase_by_hand():
    rows = {r["category"]: r for r in depth_at_purchase_table(evaluation(), "B", "A")}
    assert rows["all"]["depth_a"] == pytest.approx(4.0) and rows["all"]["depth_b"] == pytest.approx(6.0)
    assert rows["all"]["relative"] == pytest.approx(0.5)
    assert rows["shoes"]["relative"] == pytest.approx(4.0 / 3.0 - 1)
    # socks: one purchase under A, no SE; the change is still given.
    assert rows["socks"]["relative"] == pytest.approx(8.0 / 6.0 - 1) and math.isnan(rows["socks"]["relative_se"])


def test_rerank_analysis_against_a_hand_instance():
    # Item 0 has the top value but ends the session; items 1, 2 keep the user: the optimum shows them first.
    value = torch.tensor([[1.0, 0.8, 0.7, 0.1]], dtype=torch.float64)
    continue_prob = torch.tensor([[0.0, 1.0, 1.0, 0.5]], dtype=torch.float64)
    rerankers = {"greedy": build_reranker("greedy"), "exact": build_reranker("exact")}
    out = rerank_analysis(value, continue_prob, 2, rerankers)
    # point-wise [0, 1]: V = 1.0; exact [1, 0]: V = 0.8 + 1.0 = 1.8.
    assert out["gap"]["pointwise"]["mean"] == pytest.approx(0.8 / 1.8)
    assert out["gap"]["exact"]["optimal_share"] == 1.0 and out["gap"]["greedy"]["optimal_share"] == 0.0
    assert out["hit_rate"]["exact"] == {"hit@1": 0.0, "hit@2": 1.0}
    text = msc_table_markdown({"title": "T8", "kind": "hit_rate", "row": "r", "analysis": out})
    assert "| 2 | 100.0% | 100.0% |" in text
    with pytest.raises(ValueError, match="reference"):
        rerank_analysis(value, continue_prob, 2, {"greedy": build_reranker("greedy")})


def test_beam_gap_is_zero_on_optimal_lists_and_positive_on_myopic_ones():
    g = torch.Generator().manual_seed(0)
    value = torch.rand(64, 40, generator=g, dtype=torch.float64) ** 3
    continue_prob = 0.5 + 0.48 * torch.rand(64, 40, generator=g, dtype=torch.float64)
    rerankers = {
        "beam_search": build_reranker({"name": "beam_search", "init_args": {"beam_size": 25}}),
        "exact": build_reranker("exact"),
    }
    out = rerank_analysis(value, continue_prob, 10, rerankers, ks=[1, 10])
    assert out["gap"]["exact"]["worst"] == 0.0
    assert 0 <= out["gap"]["beam_search"]["mean"] <= out["gap"]["pointwise"]["mean"]
    assert out["gap"]["pointwise"]["mean"] > 0
    assert set(out["hit_rate"]["beam_search"]) == {"hit@1", "hit@10"}
    assert "| beam_search |" in msc_table_markdown({"title": "G", "kind": "beam_gap", "row": "r", "analysis": out})
