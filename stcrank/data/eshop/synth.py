"""Synthetic e-shop logs: the simulator served by noisy logging policies, written in the log schema."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import Tensor

from stcrank.data.eshop.schema import (
    E_LOG_COLUMNS,
    E_LOG_FILE,
    F_LOG_COLUMNS,
    F_LOG_FILE,
    MANIFEST,
    SCHEMA_NAME,
    SCHEMA_VERSION,
    Column,
    arrow_schema,
)
from stcrank.simulation.config import (
    BehaviourConfig,
    ExploreConfig,
    FocusConfig,
    WorldConfig,
    config_from_dict,
    config_to_dict,
)
from stcrank.simulation.explore import ExploreResult, sample_visits, simulate_explore
from stcrank.simulation.policies import explore_logging_policy, focus_logging_policy
from stcrank.simulation.world import World


def _arrow(columns: tuple[Column, ...], values: dict[str, Tensor], with_truth: bool) -> pa.Table:
    schema = arrow_schema(columns, with_truth=with_truth)
    arrays = [pa.array(values[f.name].numpy(), type=f.type) for f in schema]
    return pa.Table.from_arrays(arrays, schema=schema)


def _f_rows(world: World, result: ExploreResult, visit_offset: int, session_offset: int, request_offset: int) -> dict:
    focus = result.focus
    c = focus.log.columns
    order = torch.argsort(c["session"] * (int(c["position"].max()) + 1) + c["position"])
    c = {name: values[order] for name, values in c.items()}
    session = c["session"]
    new_request = torch.ones_like(session, dtype=torch.bool)
    new_request[1:] = (session[1:] != session[:-1]) | (c["request_index"][1:] != c["request_index"][:-1])
    rows = {
        "request_id": request_offset + new_request.long().cumsum(0) - 1,
        "session_id": session_offset + session,
        "visit_id": visit_offset + result.focus_visit[session],
        "position": c["position"],
        "page_position": c["page_position"],
        "request_index": c["request_index"],
        "item_price": world.item_price[c["item"]],
        "hist_same_category_views": c["hist_same_category_views"],
        "hist_ipv": c["hist_ipv"],
        "watch_time": c["watch_time"],
        **{name: c[name] for name in ("ipv", "purchase", "swipe_down", "exit")},
        **{name: c[name] for name in c if name.startswith("truth_")},
    }
    rows.update(world.user_features(focus.starts.user[session]))
    rows.update(world.item_features(focus.starts.trigger[session], "trigger"))
    rows.update(world.item_features(c["item"], "item"))
    return rows


def _e_rows(world: World, result: ExploreResult, visit_offset: int, session_offset: int) -> dict:
    c = result.log.columns
    session = c["focus_session"]
    entered = session >= 0
    index = session.clamp(min=0)
    focus = result.focus

    def from_session(values: Tensor) -> Tensor:
        if values.numel() == 0:
            return torch.zeros_like(session, dtype=values.dtype)
        return torch.where(entered, values[index], torch.zeros((), dtype=values.dtype))

    rows = {
        "request_id": visit_offset + c["visit"],
        "visit_id": visit_offset + c["visit"],
        "position": c["position"],
        "item_price": world.item_price[c["item"]],
        "click": c["click"],
        "purchase": c["purchase"],
        "swipe": c["swipe"],
        "f_session_id": torch.where(entered, session_offset + session, -1),
        "f_purchases": from_session(focus.purchases),
        "f_purchase": from_session(focus.purchases) > 0,
        "f_ipv": from_session(focus.ipv),
        "f_depth": from_session(focus.depth),
        "f_gmv": from_session(focus.gmv.float()),
        "truth_ctr": c["truth_ctr"],
        "truth_detail_cvr": c["truth_detail_cvr"],
        "truth_swipe": c["truth_swipe"],
    }
    rows.update(world.user_features(result.users[c["visit"]]))
    rows.update(world.item_features(c["item"], "item"))
    return rows


def synth_eshop(
    *,
    out: str,
    users: int = 2000,
    sessions: int = 20000,
    seed: int = 0,
    items: int = 20000,
    candidates: int = 200,
    max_depth: int = 100,
    homepage_candidates: int = 100,
    homepage_size: int = 20,
    logging_noise: float = 0.8,
    f_temperature: float = 0.01,
    e_temperature: float = 0.02,
    truth: bool = True,
    chunk_size: int = 4096,
) -> dict:
    """Generate e-shop explore/focus logs with the simulator (F log, E log and manifest, in Parquet).

    Homepage visits are served by a noisy click-rate policy, the F sessions they lead to by a noisy
    ``cvr + vtr + sdr`` policy, both with Plackett-Luce exploration, so the logs carry position and
    selection signal and also explore. Files: ``f_log.parquet`` (one row per F page view),
    ``e_log.parquet`` (one row per homepage exposure) and ``manifest.json`` (schema version, embedding
    sizes, the simulator configs to rebuild the same world, summary statistics).

    Args:
        out: Output directory (created; existing log files are replaced).
        users: Number of users.
        sessions: Number of homepage visits (each may enter several F sessions).
        seed: Seed of the world, the policies and every draw.
        items: Number of items.
        candidates: F-stage candidates per trigger.
        max_depth: Maximum F-session depth.
        homepage_candidates: Homepage candidates per visit.
        homepage_size: Items shown on the homepage.
        logging_noise: Logit noise of the logging policies' predictions.
        f_temperature: Plackett-Luce temperature of the F logging policy (value units).
        e_temperature: Plackett-Luce temperature of the homepage logging policy (click-probability units).
        truth: Also write the simulator-only ``truth_*`` columns.
        chunk_size: Visits simulated and written together (bounds memory).

    Returns:
        The manifest.
    """
    if users < 1 or sessions < 1 or chunk_size < 1:
        raise ValueError(f"need users, sessions and chunk_size >= 1; got {users}, {sessions}, {chunk_size}")
    world = World.build(WorldConfig(users=users, items=items), seed=seed)
    focus_config = FocusConfig(candidates=candidates, max_depth=max_depth)
    explore_config = ExploreConfig(candidates=homepage_candidates, page_size=homepage_size, focus=focus_config)
    e_policy = explore_logging_policy(seed, noise=logging_noise, temperature=e_temperature)
    f_policy = focus_logging_policy(seed, noise=logging_noise, temperature=f_temperature)
    visit_users, visit_keys = sample_visits(world, sessions, seed=seed)

    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    f_schema = arrow_schema(F_LOG_COLUMNS, with_truth=truth)
    e_schema = arrow_schema(E_LOG_COLUMNS, with_truth=truth)
    totals = dict.fromkeys(("f_rows", "e_rows", "f_sessions", "f_requests", "clicks", "swipes", "e_purchases"), 0)
    totals.update(dict.fromkeys(("ipv", "purchases", "exit_no_purchase", "exit_purchase", "f_purchase_sessions"), 0))
    with (
        pq.ParquetWriter(root / F_LOG_FILE, f_schema) as f_writer,
        pq.ParquetWriter(root / E_LOG_FILE, e_schema) as e_writer,
    ):
        for start in range(0, sessions, chunk_size):
            chunk = slice(start, start + chunk_size)
            result = simulate_explore(
                world,
                e_policy,
                f_policy,
                visit_users[chunk],
                keys=visit_keys[chunk],
                seed=seed,
                config=explore_config,
                record=True,
                chunk_size=chunk_size,
            )
            e_rows = _e_rows(world, result, start, totals["f_sessions"])
            e_writer.write_table(_arrow(E_LOG_COLUMNS, e_rows, truth))
            totals["e_rows"] += len(result.log)
            totals["clicks"] += int(e_rows["click"].sum())
            totals["swipes"] += int(e_rows["swipe"].sum())
            totals["e_purchases"] += int(e_rows["purchase"].sum())
            if len(result.focus):
                f_rows = _f_rows(world, result, start, totals["f_sessions"], totals["f_requests"])
                f_writer.write_table(_arrow(F_LOG_COLUMNS, f_rows, truth))
                buy, leave = f_rows["purchase"], f_rows["exit"]
                totals["f_rows"] += buy.numel()
                totals["f_requests"] += int(f_rows["request_id"][-1]) + 1 - totals["f_requests"]
                totals["ipv"] += int(f_rows["ipv"].sum())
                totals["purchases"] += int(buy.sum())
                totals["exit_no_purchase"] += int((leave & ~buy).sum())
                totals["exit_purchase"] += int((leave & buy).sum())
                totals["f_purchase_sessions"] += int((result.focus.purchases > 0).sum())
            totals["f_sessions"] += len(result.focus)

    def ratio(a: int, b: int) -> float | None:
        return a / b if b else None

    f_rows_total, purchases = totals["f_rows"], totals["purchases"]
    manifest = {
        "schema": SCHEMA_NAME,
        "schema_version": SCHEMA_VERSION,
        "files": {"f_log": F_LOG_FILE, "e_log": E_LOG_FILE},
        "rows": {"f_log": f_rows_total, "e_log": totals["e_rows"]},
        "feature_sizes": world.feature_sizes(),
        "categories": list(world.category_names),
        "truth_columns": truth,
        "labels": {"ipv_threshold_s": world.behaviour.ipv_threshold, "page_size": focus_config.page_size},
        "generator": {
            "name": "stcrank.data.eshop.synth",
            "seed": seed,
            "sessions": sessions,
            "logging_noise": logging_noise,
            "f_temperature": f_temperature,
            "e_temperature": e_temperature,
            "world": config_to_dict(world.config),
            "behaviour": config_to_dict(world.behaviour),
            "explore": config_to_dict(explore_config),
        },
        "stats": {
            "f_sessions": totals["f_sessions"],
            "f_requests": totals["f_requests"],
            "ctr": ratio(totals["clicks"], totals["e_rows"]),
            "swipe_per_click": ratio(totals["swipes"], totals["clicks"]),
            "e_purchases": totals["e_purchases"],
            "f_ipv_rate": ratio(totals["ipv"], f_rows_total),
            "f_cvr": ratio(purchases, f_rows_total),
            "f_session_conversion": ratio(totals["f_purchase_sessions"], totals["f_sessions"]),
            "exit_no_purchase": ratio(totals["exit_no_purchase"], f_rows_total - purchases),
            "exit_purchase": ratio(totals["exit_purchase"], purchases),
        },
    }
    (root / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return manifest


def load_world(path: str | Path | dict) -> World:
    """Rebuild the simulator world a synthetic log directory was generated from.

    Lets a model trained on the logs be served, and its policy evaluated, in the very same world.

    Args:
        path: The log directory, its manifest file, or the parsed manifest.

    Returns:
        The world.

    Raises:
        ValueError: If the manifest was not written by :func:`synth_eshop`.
    """
    if isinstance(path, dict):
        manifest = path
    else:
        from stcrank.data.eshop.reader import read_manifest

        manifest = read_manifest(path)
    generator = manifest.get("generator", {})
    if generator.get("name") != "stcrank.data.eshop.synth":
        raise ValueError("the manifest was not written by synth_eshop; no simulator world to rebuild")
    return World.build(
        config_from_dict(WorldConfig, generator["world"]),
        config_from_dict(BehaviourConfig, generator["behaviour"]),
        seed=int(generator["seed"]),
    )


def explore_config_of(manifest: dict) -> ExploreConfig:
    """The E-stage config (with its F-stage config) a synthetic log directory was served with.

    Args:
        manifest: The parsed manifest.

    Returns:
        The config.
    """
    return config_from_dict(ExploreConfig, manifest["generator"]["explore"])
