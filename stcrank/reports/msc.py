"""The MSC analysis tables of ``stcrank report stcrank`` (paper Tables 6-8) and beam search's gap to ``exact``.

* :func:`category_gain_table`: purchase change by category with each category's involvement (Table 6).
* :func:`depth_at_purchase_table`: F-stage depth at conversion by category, row vs baseline (Table 7).
* :func:`record_requests` + :func:`rerank_analysis`: the served model's values and continuation probabilities
  on simulated F requests, then Hit@K between the point-wise and the re-ranked lists (Table 8) and the relative
  gap of beam search (and of the point-wise list) to the optimum of ``exact``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from stcrank.simulation.evaluation import Evaluation
from stcrank.simulation.policies import FPolicy, FPredictor
from stcrank.simulation.requests import FRequest

TABLE_KINDS: tuple[str, ...] = ("comparison", "category_gain", "depth_at_purchase", "hit_rate", "beam_gap")
"""Kinds of report tables: paired metric comparisons (Tables 3-5), and the MSC analyses (Tables 6-8, gap)."""


def category_gain_table(
    evaluation: Evaluation, row: str, baseline: str, involvement: Sequence[float]
) -> list[dict[str, Any]]:
    """Purchases gained by category (paired delta ± SE), their share of the total gain, and the involvement.

    Args:
        evaluation: The evaluation holding both policies.
        row: The policy (B).
        baseline: The baseline (A).
        involvement: Views scale ``h_c`` of each category (higher: more views needed before buying).

    Returns:
        Rows ``{"category", "involvement", "delta", "delta_se", "share"}``, largest gain first.
    """
    names = list(evaluation.category_names)
    rows = evaluation.category_breakdown(row, baseline)
    return [{**r, "involvement": float(involvement[names.index(str(r["category"]))])} for r in rows]


def depth_at_purchase_table(evaluation: Evaluation, row: str, baseline: str) -> list[dict[str, Any]]:
    """Mean F-stage depth at purchase by category for both policies, and its relative change.

    The two samples are different purchases (not paired), so the SE of the change adds both variances
    (delta method on the ratio of two independent means).

    Args:
        evaluation: The evaluation holding both policies.
        row: The policy (B).
        baseline: The baseline (A).

    Returns:
        Rows ``{"category", "purchases_a", "purchases_b", "depth_a", "depth_b", "relative", "relative_se"}``,
        ``"all"`` first.
    """
    by = {(r["policy"], r["category"]): r for r in evaluation.depth_at_purchase()}
    order = ["all", *evaluation.category_names]
    out = []
    for category in order:
        a, b = by.get((baseline, category)), by.get((row, category))
        if a is None or b is None:
            continue
        ma, mb, sa, sb = a["mean_depth"], b["mean_depth"], a["se"], b["se"]
        relative = mb / ma - 1 if ma and not math.isnan(ma) else math.nan
        relative_se = math.sqrt((sb / ma) ** 2 + (mb * sa / ma**2) ** 2) if ma and not math.isnan(ma) else math.nan
        out.append(
            {
                "category": category,
                "purchases_a": a["purchases"],
                "purchases_b": b["purchases"],
                "depth_a": ma,
                "depth_b": mb,
                "relative": relative,
                "relative_se": relative_se,
            }
        )
    return out


class _RecordingPolicy(FPolicy):
    """Serves point-wise and keeps the value and continuation probability of every first request."""

    def __init__(
        self, predictor: FPredictor, ensemble: Callable[[Mapping[str, Tensor]], Tensor], continue_task: str
    ) -> None:
        self.predictor = predictor
        self.ensemble = ensemble
        self.continue_task = continue_task
        self.values: list[Tensor] = []
        self.continues: list[Tensor] = []

    def rank(self, request: FRequest, k: int) -> Tensor:
        predictions = self.predictor.predict(request)
        value = self.ensemble(predictions)
        if request.request_index == 0:
            if self.continue_task not in predictions:
                raise KeyError(f"recording needs the {self.continue_task!r} prediction; got {sorted(predictions)}")
            self.values.append(value.detach().double())
            self.continues.append(predictions[self.continue_task].detach().double().clamp(0.0, 1.0))
        return torch.topk(value, k, dim=1).indices


def record_requests(
    world: Any,
    predictor: FPredictor,
    ensemble: Callable[[Mapping[str, Tensor]], Tensor],
    *,
    sessions: int,
    seed: int,
    config: Any,
    continue_task: str = "sdr",
) -> tuple[Tensor, Tensor]:
    """The served model's value and continuation probability of every candidate of simulated first F requests.

    Args:
        world: The simulator world.
        predictor: The row's predictor (a trained model).
        ensemble: The row's ensemble (the value).
        sessions: F sessions (homepage entries) to record, one first request each.
        seed: Seed of the session starts.
        config: F-stage config (candidates ``n`` and page size ``k``).
        continue_task: The prediction used as continuation probability.

    Returns:
        ``(value, continue_prob)``, each ``[sessions, n]`` float64.
    """
    from stcrank.simulation.explore import sample_focus_starts
    from stcrank.simulation.focus import simulate_focus

    recorder = _RecordingPolicy(predictor, ensemble, continue_task)
    starts = sample_focus_starts(world, sessions, seed=seed)
    simulate_focus(world, recorder, starts, config=config, seed=seed)
    return torch.cat(recorder.values), torch.cat(recorder.continues)


def rerank_analysis(
    value: Tensor,
    continue_prob: Tensor,
    k: int,
    rerankers: Mapping[str, Callable[[Tensor, Tensor, int], Tensor]],
    reference: str = "exact",
    ks: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Hit@K of each re-ranked list against the point-wise list, and each list's relative gap to ``reference``.

    Args:
        value: Values ``[R, n]``.
        continue_prob: Continuation probabilities ``[R, n]``.
        k: List length.
        rerankers: Name -> re-ranker (``(value, continue_prob, k) -> [R, k]``); must include ``reference``.
        reference: The re-ranker whose sequence value is the optimum (``exact``).
        ks: Depths of the hit rates (``1..k`` when None).

    Returns:
        A dict with keys ``requests``, ``n``, ``k``, ``hit_rate`` (re-ranker name to ``{"hit@K": rate}``) and
        ``gap`` (re-ranker name to its ``mean``, ``worst``, ``optimal_share`` and ``value``); the point-wise list
        is named ``pointwise``.
    """
    from stcrank.rerank import hit_rate_table, relative_gap, sequence_value

    if reference not in rerankers:
        raise ValueError(f"rerankers must include the reference {reference!r}; got {sorted(rerankers)}")
    ks = list(ks or range(1, k + 1))
    pointwise = torch.topk(value, k, dim=1).indices
    lists = {"pointwise": pointwise, **{name: r(value, continue_prob, k) for name, r in rerankers.items()}}
    values = {name: sequence_value(value, continue_prob, order) for name, order in lists.items()}
    best = values[reference]
    gap = {}
    for name, v in values.items():
        g = relative_gap(best, v)
        gap[name] = {
            "mean": float(g.mean()),
            "worst": float(g.max()),
            "optimal_share": float((g <= 1e-9).double().mean()),
            "value": float(v.mean()),
        }
    hits = {name: hit_rate_table(pointwise, order, ks) for name, order in lists.items() if name != "pointwise"}
    return {"requests": int(value.shape[0]), "n": int(value.shape[1]), "k": k, "hit_rate": hits, "gap": gap}


def _pct(value: float, se: float | None = None) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    return f"{100 * value:+.2f}%" + (f" ± {100 * se:.2f}" if se is not None and not math.isnan(se) else "")


def msc_table_markdown(table: Mapping[str, Any]) -> str:
    """One MSC analysis table (category gain, depth at purchase, hit rates or beam gap) as Markdown."""
    kind, lines = table["kind"], [f"### {table['title']}", ""]
    if kind == "category_gain":
        lines += [f"{table['row']} vs {table['baseline']}, purchases per visit/session by category.", ""]
        lines += ["| category | involvement h | delta ± SE | share of gain |", "|---|---:|---:|---:|"]
        for r in table["rows"]:
            lines.append(
                f"| {r['category']} | {r['involvement']:.2g} | {r['delta']:+.4f} ± {r['delta_se']:.4f} "
                f"| {_pct(r['share'])} |"
            )
    elif kind == "depth_at_purchase":
        lines += [f"{table['row']} vs {table['baseline']}: mean F-stage depth at purchase.", ""]
        lines += ["| category | purchases A / B | depth A | depth B | change ± SE |", "|---|---:|---:|---:|---:|"]
        for r in table["rows"]:
            lines.append(
                f"| {r['category']} | {r['purchases_a']} / {r['purchases_b']} | {r['depth_a']:.2f} "
                f"| {r['depth_b']:.2f} | {_pct(r['relative'], r['relative_se'])} |"
            )
    elif kind == "hit_rate":
        a = table["analysis"]
        lines += [
            f"{table['row']}: {a['requests']} simulated first F requests, n = {a['n']}, k = {a['k']}; Hit@K = share "
            "of the re-ranked top K that the point-wise top K holds.",
            "",
        ]
        names = list(a["hit_rate"])
        lines += ["| K | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
        for key in a["hit_rate"][names[0]]:
            cells = [f"{100 * a['hit_rate'][name][key]:.1f}%" for name in names]
            lines.append(f"| {key.removeprefix('hit@')} | " + " | ".join(cells) + " |")
    elif kind == "beam_gap":
        a = table["analysis"]
        lines += [
            f"{table['row']}: the served model's values and sdr on {a['requests']} simulated first F requests "
            f"(n = {a['n']}, k = {a['k']}); gap = (V_exact - V) / V_exact.",
            "",
        ]
        lines += ["| list | mean V | mean gap | worst gap | optimal on |", "|---|---:|---:|---:|---:|"]
        for name, g in a["gap"].items():
            lines.append(
                f"| {name} | {g['value']:.5g} | {100 * g['mean']:.3f}% | {100 * g['worst']:.3f}% "
                f"| {100 * g['optimal_share']:.1f}% |"
            )
    else:
        raise ValueError(f"unknown MSC table kind {kind!r}")
    return "\n".join([*lines, ""])
