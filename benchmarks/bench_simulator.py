"""Throughput of the e-shop simulator: F sessions (up to 100 items) and homepage visits per second.

Prints one JSON object. The target is at least 20,000 F sessions per minute (333/s) on 2 CPU cores.
``--load both`` measures idle and with a competing busy loop, and reports busy / idle.

    python benchmarks/bench_simulator.py [--sessions 20000] [--visits 20000] [--threads 1] [--load idle|busy|both]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import replace

import torch
from harness import add_common_arguments, machine, parse_arguments, under_loads

from stcrank.simulation import (
    ExploreConfig,
    FocusConfig,
    RandomPolicy,
    TruthPredictor,
    ValuePolicy,
    WeightedSum,
    World,
    explore_logging_policy,
    focus_logging_policy,
    sample_focus_starts,
    sample_visits,
    simulate_explore,
    simulate_focus,
)


def _time(fn):
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - start_wall, time.process_time() - start_cpu


def measure(args: argparse.Namespace) -> dict:
    """Every simulation once."""
    world, build_s, _ = _time(lambda: World.build(seed=0))
    starts, starts_s, _ = _time(lambda: sample_focus_starts(world, args.sessions, seed=1))
    results = {}
    policies = {
        "random": RandomPolicy(),
        "logging": focus_logging_policy(),
        "truth_greedy": ValuePolicy(TruthPredictor(noise=0.5), WeightedSum({"cvr": 1.0, "vtr": 0.05, "sdr": 0.02})),
    }
    for n in args.candidates:
        config = FocusConfig(candidates=n, max_depth=100)
        for name, policy in policies.items():
            out, wall, cpu = _time(
                lambda policy=policy, config=config: simulate_focus(world, policy, starts, config=config, seed=1)
            )
            items = int(out.depth.sum())
            results[f"focus/{name}/n{n}"] = {
                "sessions": len(starts),
                "items": items,
                "mean_depth": items / len(starts),
                "max_depth": int(out.depth.max()),
                "wall_s": round(wall, 3),
                "cpu_s": round(cpu, 3),
                "sessions_per_s": round(len(starts) / wall, 1),
                "sessions_per_min": round(60 * len(starts) / wall),
                "items_per_s": round(items / wall, 1),
            }
    # Deep sessions: the same world with users far less likely to leave (mean depth in the tens).
    deep = world.with_behaviour(replace(world.behaviour, exit_bias=world.behaviour.exit_bias - 4.0))
    out, wall, cpu = _time(lambda: simulate_focus(deep, focus_logging_policy(), starts, config=FocusConfig(), seed=1))
    items = int(out.depth.sum())
    results["focus/logging_deep/n200"] = {
        "sessions": len(starts),
        "items": items,
        "mean_depth": items / len(starts),
        "truncated_at_100": float(out.truncated.float().mean()),
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "sessions_per_s": round(len(starts) / wall, 1),
        "sessions_per_min": round(60 * len(starts) / wall),
        "items_per_s": round(items / wall, 1),
    }
    users, keys = sample_visits(world, args.visits, seed=2)
    out, wall, cpu = _time(
        lambda: simulate_explore(
            world, explore_logging_policy(), focus_logging_policy(), users, keys=keys, seed=2, config=ExploreConfig()
        )
    )
    results["explore/logging"] = {
        "visits": args.visits,
        "f_sessions": len(out.focus),
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "visits_per_s": round(args.visits / wall, 1),
    }
    return {"world_build_s": round(build_s, 3), "focus_starts_s": round(starts_s, 3), "results": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=20000)
    parser.add_argument("--visits", type=int, default=20000)
    parser.add_argument("--candidates", type=int, nargs="+", default=[200, 800])
    parser.add_argument("--threads", type=int, default=1)
    add_common_arguments(parser, device=False, threads=False)
    args = parse_arguments(parser)
    torch.set_num_threads(args.threads)

    def headline(figures: dict) -> dict:
        return {
            name: entry.get("sessions_per_s", entry.get("visits_per_s")) for name, entry in figures["results"].items()
        }

    print(
        json.dumps(
            {
                "benchmark": "simulator",
                "machine": machine(args) | {"platform": platform.machine()},
                "target_sessions_per_min": 20000,
                "results": under_loads(lambda: measure(args), args, headline),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
