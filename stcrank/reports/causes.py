"""Why a paper direction does not hold in the simulator: the method fed true inputs, against the trained models.

A row of the STCRank report is a label design (which targets the model learns) served through an ensemble and
an optional re-ranker. Its *truth arm* serves the same ensemble and re-ranker on the true probabilities its
labels target (:class:`~stcrank.simulation.policies.TruthPredictor` with the row's ``truth`` settings: the view
threshold of its ``vtr`` label and what its ``sdr`` label estimates), as a perfectly trained model would. The
report serves the truth arms on the first training seed's sessions beside the model arms, and for every F-stage
direction compares the truth arm of B with that of A on the same sessions:

* the truth arms show the paper's direction but the trained models do not: the simulator rewards the method,
  the models' predictions lose it (a property of the trained models: what they learn from the logs);
* the truth arms do not show it either (no significant change, or the opposite one): the simulator's behaviour
  model does not reward the change even with perfect inputs (a property of the simulator, not of the method's
  training).

This is the measurement behind :mod:`stcrank.reports.msc_attribution` (true inputs against model inputs),
applied to every direction.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

from stcrank.errors import ConfigError
from stcrank.reports.comparisons import pct
from stcrank.reports.power import ALPHA, NO_EFFECT, UNDERPOWERED, combine_seeds
from stcrank.simulation.evaluation import Evaluation, expected_metric
from stcrank.simulation.policies import TruthPredictor, ValuePolicy

__all__ = ["TRUTH_PREFIX", "explain", "findings_markdown", "truth_arm", "truth_comparisons"]

TRUTH_PREFIX = "truth:"
"""Name prefix of the truth arms in the first seed's evaluation."""
TRUTH_KEYS = ("vtr_threshold", "sdr_label")
"""Settings of a row's ``truth`` (the defaults are :class:`~stcrank.simulation.policies.TruthPredictor`'s)."""


def truth_arm(ensemble: Any, reranker: Any, truth: Mapping[str, Any] | None) -> ValuePolicy:
    """A row's ensemble and re-ranker served on the true probabilities its labels target.

    Args:
        ensemble: The row's served ensemble.
        reranker: The row's re-ranker (None: point-wise).
        truth: ``{"vtr_threshold": seconds, "sdr_label": "all" | "filtered" | "no_purchase"}`` (defaults 5 s and
            ``filtered``).

    Returns:
        The policy.

    Raises:
        ValueError: For a key other than :data:`TRUTH_KEYS`.
    """
    settings = dict(truth or {})
    unknown = sorted(set(settings) - set(TRUTH_KEYS))
    if unknown:
        raise ConfigError(f"truth settings {unknown} unknown; use {list(TRUTH_KEYS)}")
    return ValuePolicy(TruthPredictor(noise=0.0, **settings), ensemble, reranker)


def truth_comparisons(evaluation: Evaluation, directions: Sequence[Mapping[str, Any]]) -> dict[int, dict[str, Any]]:
    """For every F-stage direction whose rows have truth arms: the truth arms' paired change, and each row's gap.

    Args:
        evaluation: The first seed's F-stage evaluation, holding the model arms and the truth arms
            (``truth:<row>``).
        directions: The report's directions.

    Returns:
        Direction index -> a dict with ``metric`` (the evaluation metric), ``truth`` (the truth arms' relative
        change, its SE, MDE and p-value), ``row_gap`` and ``baseline_gap`` (each model arm against its own truth
        arm: relative change and SE).
    """
    out: dict[int, dict[str, Any]] = {}
    for index, d in enumerate(directions):
        row, baseline = d["row"], d["baseline"]
        truth_row, truth_base = TRUTH_PREFIX + row, TRUTH_PREFIX + baseline
        if d.get("stage", "focus") != "focus" or not {truth_row, truth_base} <= set(evaluation.policies):
            continue
        metric = expected_metric(d["metric"], list(evaluation.metrics[row]))
        delta = evaluation.compare(truth_row, truth_base, metric)
        # The truth arms are deterministic: the evaluation noise is their only uncertainty.
        combined = combine_seeds([delta.relative], [delta.relative_se])
        out[index] = {
            "metric": metric,
            "truth": {
                "relative": delta.relative,
                "relative_se": delta.relative_se,
                "mde": combined.mde,
                "p_value": combined.p_value,
            },
            "row_gap": _gap(evaluation, row, truth_row, metric),
            "baseline_gap": _gap(evaluation, baseline, truth_base, metric),
        }
    return out


def _gap(evaluation: Evaluation, model: str, truth: str, metric: str) -> dict[str, float]:
    d = asdict(evaluation.compare(model, truth, metric))
    return {"relative": d["relative"], "relative_se": d["relative_se"]}


def explain(direction: Mapping[str, Any], truth: Mapping[str, Any] | None) -> str:
    """One paragraph on why a direction does not hold, from its truth comparison (empty when it holds).

    Args:
        direction: A checked direction (with ``verdict``, ``relative``, ``relative_se``).
        truth: Its entry of :func:`truth_comparisons`, or None.

    Returns:
        The text (Markdown), or ``""`` for a direction that holds or is underpowered (no cause to give).
    """
    if direction["verdict"] in ("holds", UNDERPOWERED):
        return ""
    pair = f"{direction['row']} vs {direction['baseline']}"
    model = f"trained models {pct(direction['relative'], direction['relative_se'])}"
    if truth is None:
        return f"{pair}: {model}; no truth arms for this direction (E-stage rows are not analysed)."
    t = truth["truth"]
    sign = 1 if direction["expect"] == "up" else -1
    significant = t["p_value"] < ALPHA
    truth_text = f"true inputs {pct(t['relative'], t['relative_se'])}"
    row_gap, base_gap = truth["row_gap"], truth["baseline_gap"]
    gaps = (
        f"Each model against its own truth arm: {direction['row']} {pct(row_gap['relative'], row_gap['relative_se'])}, "
        f"{direction['baseline']} {pct(base_gap['relative'], base_gap['relative_se'])}."
    )
    if significant and sign * t["relative"] > 0:
        cause = (
            f"the simulator rewards the change ({truth_text}, the paper's direction) but the trained models do not "
            f"({model}): a property of the trained models (what the labels let them learn from the logs), "
            "not of the simulator."
        )
    elif significant:
        cause = (
            f"even with perfect predictions the change goes against the paper ({truth_text}; {model}): a property "
            "of the simulator's behaviour model, not of the training."
        )
    else:
        mde = "n/a" if math.isnan(t["mde"]) else f"{100 * t['mde']:.2f}%"
        cause = (
            f"with perfect predictions there is no effect larger than {mde} either ({truth_text}; {model}): the "
            "simulator's behaviour model does not reward this change; a property of the simulator."
        )
    return f"{pair} ({truth['metric']}): {cause} {gaps}"


def findings_markdown(directions: Sequence[Mapping[str, Any]], truths: Mapping[int, Mapping[str, Any]]) -> str:
    """The *Findings* section: verdict counts, then the measured cause of each direction that does not hold."""
    counts = {v: sum(d["verdict"] == v for d in directions) for v in ("holds", "reversed", NO_EFFECT, UNDERPOWERED)}
    lines = [
        "## Findings",
        "",
        ", ".join(f"{n} {name}" for name, n in counts.items()) + f" (of {len(directions)} directions).",
        "",
    ]
    causes = [(d, explain(d, truths.get(i))) for i, d in enumerate(directions)]
    causes = [(d, text) for d, text in causes if text]
    if causes:
        lines += [
            "Why the directions that do not hold (with adequate power) do not: the same rows served on the true "
            "probabilities their labels target (truth arms, first seed's sessions) against the trained models.",
            "",
        ]
        lines += [f"- **{d['claim']}** ({d['verdict']}): {text}" for d, text in causes]
        lines.append("")
    underpowered = [d["claim"] for d in directions if d["verdict"] == UNDERPOWERED]
    if underpowered:
        lines += [
            f"Underpowered (MDE above the paper's effect; more seeds or sessions needed): {'; '.join(underpowered)}.",
            "",
        ]
    return "\n".join(lines)
