"""Throughput and quality of the built-in re-rankers: greedy, exact and beam search.

Scores like the paper's F stage: n = 800 candidates, lists of k = 10, batches of 1,024 requests, v = U^3 and
continuation probabilities in [0.5, 0.98], drawn independently of v, positively correlated with it, or
anti-correlated (valuable items end sessions: the greedy trap). Prints one JSON object: requests per second of
each re-ranker (median and best of the repeats, and per CPU-second of this process), beam search's relative
gap to the exact optimum, the exact pruning's surviving candidates, Table-8 style hit rates against the
point-wise list, and the same timings on CUDA when a GPU is present (or only there with ``--device cuda``).

``--load both`` measures idle and with a competing busy loop on ``--busy-cores`` cores, and reports busy / idle.
The re-rankers run on ``--reranker-threads`` intra-op threads (their default, 1; ``none`` keeps the process's
``--threads``, the setting that collapses when another process takes a core).

    python benchmarks/bench_rerank.py [--requests 1024] [--repeats 5] [--threads N] [--reranker-threads 1|none]
        [--device cpu|cuda] [--load idle|busy|both]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import time
from collections.abc import Callable

import torch
from harness import add_common_arguments, check_device, machine, parse_arguments, under_loads

from stcrank.rerank import RERANK_THREADS, hit_rate_table, relative_gap, sequence_value
from stcrank_plugins.rerankers.beam_search import BeamSearchReranker
from stcrank_plugins.rerankers.exact import ExactReranker, dominance_candidates
from stcrank_plugins.rerankers.greedy import GreedyReranker

VARIANTS = ("independent", "correlated", "anticorrelated")


def make_batch(variant: str, requests: int, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    u = torch.rand(requests, n, generator=generator)
    value = u**3
    if variant == "independent":
        continue_prob = 0.5 + 0.48 * torch.rand(requests, n, generator=generator)
    else:
        sign = 1.0 if variant == "correlated" else -1.0
        noise = 0.1 * torch.randn(requests, n, generator=generator)
        continue_prob = (0.74 + sign * 0.48 * (u - 0.5) + noise).clamp(0.5, 0.98)
    return value, continue_prob


def timed(run: Callable[[], torch.Tensor], repeats: int, cuda: bool) -> tuple[torch.Tensor, list[float], list[float]]:
    """Run once to warm up, then ``repeats`` times; wall-clock and process CPU seconds of each run."""
    out = run()
    wall, cpu = [], []
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize()
        start, start_cpu = time.perf_counter(), time.process_time()
        run()
        if cuda:
            torch.cuda.synchronize()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return out, wall, cpu


def measure(device: str, args: argparse.Namespace) -> dict:
    cuda = device == "cuda"
    threads = args.reranker_threads
    rerankers = {
        "greedy": GreedyReranker(threads=threads),
        "exact": ExactReranker(threads=threads),
        f"beam_search_{args.beam_size}": BeamSearchReranker(beam_size=args.beam_size, threads=threads),
    }
    results = {}
    for variant in VARIANTS:
        generator = torch.Generator().manual_seed(args.seed)
        value, continue_prob = (t.to(device) for t in make_batch(variant, args.requests, args.n, generator))
        entry: dict = {"requests_per_s": {}, "requests_per_s_best": {}, "requests_per_cpu_s": {}}
        lists = {}
        for name, reranker in rerankers.items():
            run = functools.partial(reranker, value, continue_prob, args.k)
            lists[name], wall, cpu = timed(run, args.repeats, cuda)
            entry["requests_per_s"][name] = round(args.requests / statistics.median(wall))
            entry["requests_per_s_best"][name] = round(args.requests / min(wall))
            # CPU seconds of this process (all threads): less sensitive to other load than wall-clock time.
            entry["requests_per_cpu_s"][name] = round(args.requests / statistics.median(cpu))
        values = {name: sequence_value(value, continue_prob, order) for name, order in lists.items()}
        beam = f"beam_search_{args.beam_size}"
        gap = relative_gap(values["exact"], values[beam])
        if bool((gap < -1e-5).any()):
            raise AssertionError("beam search beat the exact optimum: the exact re-ranker is wrong")
        entry["beam_gap_to_exact"] = {"mean": round(float(gap.mean()), 5), "worst": round(float(gap.max()), 5)}
        entry["exact_gain_over_greedy"] = round(float((values["exact"] / values["greedy"] - 1).mean()), 5)
        kept = (dominance_candidates(value, continue_prob, args.k) >= 0).sum(1).float()
        entry["exact_candidates_after_pruning"] = {"mean": round(float(kept.mean()), 1), "max": int(kept.max())}
        entry["hit_rate_vs_greedy"] = {
            name: {key: round(rate, 4) for key, rate in hit_rate_table(lists["greedy"], lists[name]).items()}
            for name in ("exact", beam)
        }
        results[variant] = entry
    return results


def _threads(text: str) -> int | None:
    return None if text.lower() == "none" else int(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1024)
    parser.add_argument("--n", type=int, default=800)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--beam-size", type=int, default=25)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--reranker-threads", type=_threads, default=RERANK_THREADS, help="threads of a re-ranking call, or none"
    )
    add_common_arguments(parser)
    parser.set_defaults(threads=len(os.sched_getaffinity(0)), device=None)
    args = parse_arguments(parser)
    torch.set_num_threads(args.threads)
    devices = [check_device(args.device)] if args.device else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

    def run() -> dict:
        return {device: measure(device, args) for device in devices}

    def headline(figures: dict) -> dict:
        return {
            f"{device}.{variant}.{name}": rate
            for device, variants in figures.items()
            if isinstance(variants, dict)
            for variant, entry in variants.items()
            if isinstance(entry, dict)
            for name, rate in entry["requests_per_s"].items()
        }

    report = {
        "requests": args.requests,
        "n": args.n,
        "k": args.k,
        "beam_size": args.beam_size,
        "repeats": args.repeats,
        "reranker_threads": args.reranker_threads,
        "machine": machine(args),
        "results": under_loads(run, args, headline),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
