"""Serve one seed's rows of ``stcrank report stcrank`` in the simulator, and the MSC analysis tables.

F-stage tables and directions are computed on F sessions, ``stage: explore`` ones on whole homepage visits (each
row with its ``e_policy``); every row of a stage is served on the same sessions (common random numbers). The
first seed also serves the rows' truth arms (:mod:`stcrank.reports.causes`) on its F sessions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import Tensor

from stcrank.reports.causes import TRUTH_PREFIX, truth_arm
from stcrank.simulation.evaluation import Evaluation
from stcrank.simulation.policies import FPredictor
from stcrank.simulation.requests import FRequest


def stage_rows(tables: Sequence[Mapping[str, Any]], directions: Sequence[Mapping[str, Any]], stage: str) -> set[str]:
    """Rows named by the tables and directions of one stage."""
    items = [
        item
        for table in tables
        if table.get("stage", "focus") == stage
        for item in (table.get("comparisons", []) if table.get("kind", "comparison") == "comparison" else [table])
    ]
    items += [d for d in directions if d.get("stage", "focus") == stage]
    return {item[key] for item in items for key in ("row", "baseline") if key in item}


def evaluate_stages(
    data: Path,
    specs: list[dict[str, Any]],
    config: Any,
    sessions: int,
    seed: int,
    stage: str,
    say: Callable[[str], None],
    truth_arms: bool = False,
) -> dict[str, Evaluation]:
    """Serve the rows each stage needs: F sessions for focus tables, homepage visits for explore tables.

    Args:
        data: The simulated log directory (its manifest rebuilds the world).
        specs: Serving specs of :func:`~stcrank.reports.stcrank_rows.train_rows`.
        config: The report config.
        sessions: Sessions (visits) per arm.
        seed: Seed of the sessions and of every draw.
        stage: ``focus`` (both stages as the tables need) or ``explore`` (every row on homepage visits).
        say: Progress printer.
        truth_arms: Also serve each F-stage row's truth arm (``truth:<row>``) on the F sessions.

    Returns:
        Stage -> evaluation.
    """
    if stage == "explore":
        say(f"serving {len(specs)} arms on {sessions} homepage visits each")
        return {"explore": _evaluate(data, specs, sessions, seed, "explore")}
    explore_rows = stage_rows(config.tables, config.directions, "explore")
    focus_rows = stage_rows(config.tables, config.directions, "focus")
    focus_rows |= {s["name"] for s in specs if s["name"] not in explore_rows}
    out = {}
    for name, rows in (("focus", focus_rows), ("explore", explore_rows)):
        chosen = [s for s in specs if s["name"] in rows]
        if name == "focus" and truth_arms:
            chosen = chosen + [
                {**s, "name": TRUTH_PREFIX + s["name"], "predictor": None, "truth_arm": True} for s in chosen
            ]
        if chosen:
            unit = "F sessions" if name == "focus" else "homepage visits"
            say(f"serving {len(chosen)} policies on {sessions} {unit} each")
            out[name] = _evaluate(data, chosen, sessions, seed, name)
    return out


class SharedFirstRequests(FPredictor):
    """A predictor whose first-request predictions are shared by every F arm that serves the same trained model.

    All arms of an F-stage evaluation see the same first request of each session (the same user, trigger and
    candidates in the same order, an empty history: common random numbers), and most sessions end in their first
    list; arms serving one model (SDR-3, MOC-3 and the MSC rows share a fit) thus score the same first requests.
    Those are predicted once and served to the others from the cache (keyed by the requests' session keys,
    users and triggers, so the answer is exactly the model's); later requests depend on each arm's history and
    are predicted afresh.

    Args:
        inner: The model's predictor.
        cache: Shared by the arms of one model, for one evaluation.
    """

    def __init__(self, inner: FPredictor, cache: dict[bytes, dict[str, Tensor]]) -> None:
        self.inner = inner
        self.cache = cache

    def predict(self, request: FRequest) -> dict[str, Tensor]:
        """The inner predictor's predictions, from the cache for a first request seen before."""
        if request.request_index != 0:
            return self.inner.predict(request)
        key = b"".join(t.numpy().tobytes() for t in (request.session_key, request.user, request.trigger))
        if key not in self.cache:
            self.cache[key] = self.inner.predict(request)
        return {task: p.clone() for task, p in self.cache[key].items()}


def _policies(specs: Sequence[Mapping[str, Any]], share_first_requests: bool) -> dict[str, Any]:
    from stcrank.simulation.policies import ValuePolicy

    caches: dict[int, dict[bytes, dict[str, Tensor]]] = {}
    models = [id(getattr(s["predictor"], "model", s["predictor"])) for s in specs if not s.get("truth_arm")]
    policies = {}
    for spec in specs:
        if spec.get("truth_arm"):
            policies[spec["name"]] = truth_arm(spec["ensemble"], spec["reranker"], spec.get("truth"))
            continue
        predictor = spec["predictor"]
        model = id(getattr(predictor, "model", predictor))
        if share_first_requests and models.count(model) > 1:
            predictor = SharedFirstRequests(predictor, caches.setdefault(model, {}))
        policies[spec["name"]] = ValuePolicy(predictor, spec["ensemble"], spec["reranker"])
    return policies


def _evaluate(data: Path, specs: list[dict[str, Any]], sessions: int, seed: int, stage: str) -> Evaluation:
    from stcrank.data.eshop.reader import read_manifest
    from stcrank.data.eshop.synth import explore_config_of, load_world
    from stcrank.simulation.evaluation import evaluate_explore, evaluate_focus
    from stcrank.simulation.model_policy import build_e_policy

    manifest = read_manifest(data)
    world, explore_config = load_world(manifest), explore_config_of(manifest)
    # On homepage visits each arm's F sessions start from its own homepage: nothing to share.
    policies = _policies(specs, share_first_requests=stage == "focus")
    if stage == "focus":
        return evaluate_focus(world, policies, sessions=sessions, seed=seed, config=explore_config.focus)
    arms = {s["name"]: (build_e_policy(s["e_policy"], seed, data), policies[s["name"]]) for s in specs}
    return evaluate_explore(world, arms, visits=sessions, seed=seed, config=explore_config)


def msc_tables(
    data: Path,
    specs: list[dict[str, Any]],
    evaluations: Mapping[str, Evaluation],
    config: Any,
    seed: int,
) -> list[dict[str, Any]]:
    """The MSC analysis tables (category gain, depth at purchase, Hit@K, beam gap to exact) of one seed."""
    from stcrank.data.eshop.reader import read_manifest
    from stcrank.data.eshop.synth import explore_config_of, load_world
    from stcrank.reports import msc
    from stcrank.simulation.model_policy import build_reranker

    wanted = [t for t in config.tables if t.get("kind", "comparison") != "comparison"]
    if not wanted:
        return []
    manifest = read_manifest(data)
    world, focus_config = load_world(manifest), explore_config_of(manifest).focus
    by_name = {s["name"]: s for s in specs}
    recorded: dict[str, tuple[Any, Any]] = {}
    out = []
    for table in wanted:
        kind, row = table["kind"], table["row"]
        entry = {"name": table["name"], "title": table.get("title", table["name"]), "kind": kind, "row": row}
        if kind in ("category_gain", "depth_at_purchase"):
            evaluation = evaluations.get(table.get("stage", "focus"))
            if evaluation is None:
                continue
            entry["baseline"] = table["baseline"]
            if kind == "category_gain":
                involvement = world.involvement.tolist()
                entry["rows"] = msc.category_gain_table(evaluation, row, table["baseline"], involvement)
            else:
                entry["rows"] = msc.depth_at_purchase_table(evaluation, row, table["baseline"])
        else:
            requests = int(table.get("requests", 1000))
            if row not in recorded:
                spec = by_name[row]
                recorded[row] = msc.record_requests(
                    world, spec["predictor"], spec["ensemble"], sessions=requests, seed=seed + 7, config=focus_config
                )
            value, continue_prob = recorded[row]
            rerankers = {name: build_reranker(r) for name, r in dict(table.get("rerankers") or {}).items()}
            if "exact" not in rerankers:
                rerankers["exact"] = build_reranker("exact")
            ks = table.get("ks")
            entry["analysis"] = msc.rerank_analysis(value, continue_prob, focus_config.page_size, rerankers, ks=ks)
        out.append(entry)
    return out
