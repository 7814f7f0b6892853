"""Serving latency and throughput of the exported ranking pipeline (MMoE + linear ensemble + re-ranker).

The pipeline of ``stcrank export --pipeline`` with the MOC-3 network's shapes (MMoE, 3 heads, 4 experts
[256, 128], towers [64], embeddings 16; random weights: timings do not depend on them), served four ways on the
same inputs and the same threads (torch intra-op threads and onnxruntime's ``intra_op_num_threads`` both
``--threads``):

* ``eager``: the network in PyTorch (request columns ``[R, 1]``, candidate columns ``[R, n]``, as the simulator's
  model predictor feeds it), the ensemble plugin, the re-ranker plugin;
* ``exported``: the ``.pt2`` program (``torch.export.load``);
* ``onnxruntime``: the ``.onnx`` model;
* ``floor``: the pipeline's dense matrix products alone (``torch.mm`` of the same shapes: the request-level and
  the candidate-level shares of the first layers, the experts' and the towers' other layers), the least any
  implementation of the network must spend.

Prints one JSON object: latency at batch 1 (one request of ``--candidates`` candidates; p50 and p99 over
``--calls`` calls, in ms), throughput at ``--requests`` requests (requests per second, served in calls of
``--chunk`` requests, the best of ``--repeats``), the ratios of each to eager and to the floor, the machine and
its load. Targets: p99 at batch 1 within 2x the floor's, throughput within 1.3x of it.

    python benchmarks/bench_serving.py [--threads 1] [--candidates 800] [--requests 1024] [--chunk 128]
        [--reranker exact|greedy|beam_search] [--k 10] [--calls 300] [--repeats 3] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from harness import add_common_arguments, apply_threads, machine, parse_arguments

from stcrank import registry
from stcrank.export.formats import write_graph
from stcrank.export.multitask_graphs import column_layout
from stcrank.export.pipeline_graph import pipeline_graph
from stcrank.models.mmoe import MMoE
from stcrank_plugins.ensembles.linear import LinearEnsemble

FEATURE_SIZES = {
    "user_id": 20_001,
    "user_segment": 9,
    "user_activity_bucket": 6,
    "user_purchase_bucket": 6,
    "user_price_bucket": 6,
    "item_id": 50_001,
    "item_category": 41,
    "item_brand": 401,
    "item_price_bucket": 11,
    "trigger_item_id": 50_001,
    "trigger_category": 41,
    "trigger_brand": 401,
    "trigger_price_bucket": 11,
}
"""Embedding-table sizes of the MOC-3 network's categorical columns (the e-shop simulator's scale)."""
WEIGHTS = {"cvr": 1.0, "vtr": 0.1, "sdr": 0.5}


def make_network() -> MMoE:
    torch.manual_seed(0)
    return MMoE(FEATURE_SIZES, tasks=["cvr", "vtr", "sdr"], embedding_dim=16, expert_hidden=[256, 128]).eval()


def make_inputs(network: MMoE, requests: int, candidates: int, seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    request_names, candidate_names = column_layout(network)

    def ids(name: str, shape: tuple[int, ...]) -> torch.Tensor:
        high = FEATURE_SIZES.get(name) or network.counts[name]
        return torch.randint(1, high, shape, generator=generator)

    return {
        "request_features": torch.stack([ids(n, (requests,)) for n in request_names], -1),
        "candidate_features": torch.stack([ids(n, (requests, candidates)) for n in candidate_names], -1),
        "item_price": torch.rand(requests, candidates, generator=generator) * 100,
    }


def eager_pipeline(network: MMoE, reranker, k: int) -> Callable[[dict[str, torch.Tensor]], torch.Tensor]:
    request_names, candidate_names = column_layout(network)
    ensemble = LinearEnsemble(WEIGHTS)

    @torch.no_grad()
    def run(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        columns = {n: inputs["request_features"][:, i : i + 1] for i, n in enumerate(request_names)}
        columns.update({n: inputs["candidate_features"][..., i] for i, n in enumerate(candidate_names)})
        columns["item_price"] = inputs["item_price"]
        predictions = {task: torch.sigmoid(logit) for task, logit in network(columns).items()}
        return reranker(ensemble(predictions), predictions["sdr"], k)

    return run


def is_linear(layer: torch.nn.Module) -> bool:
    return isinstance(layer, torch.nn.Linear)


def floor_products(network: MMoE, requests: int, candidates: int) -> Callable[[], None]:
    """The dense products of the pipeline at these sizes, as plain ``torch.mm`` calls on random operands."""
    request_names, _ = column_layout(network)
    width = network.input_norm.normalized_shape[0]
    request_width = network.involvement.embedding_dim * len(request_names)  # one embedding per request column
    first = sum(expert[0].out_features for expert in network.experts) + len(network.tasks) * network.num_experts
    rows = requests * candidates
    # The candidates' product carries three more columns: the request's share and the layer norm's terms.
    shapes = [(requests, request_width, first), (rows, width - request_width + 3, first)]
    for expert in network.experts:
        shapes += [(rows, layer.in_features, layer.out_features) for layer in list(expert)[2:] if is_linear(layer)]
    for tower in network.towers.values():
        shapes += [(rows, layer.in_features, layer.out_features) for layer in tower if is_linear(layer)]
    operands = [(torch.randn(m, a), torch.randn(a, b)) for m, a, b in shapes]

    def run() -> None:
        for left, right in operands:
            torch.mm(left, right)

    return run


def percentiles(times: list[float]) -> dict[str, float]:
    milliseconds = np.array(times) * 1e3
    return {f"p{q}_ms": round(float(np.percentile(milliseconds, q)), 4) for q in (50, 99)}


def latency(call: Callable[[], object], calls: int, warmup: int = 10) -> dict[str, float]:
    for _ in range(warmup):
        call()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return percentiles(times)


def throughput(calls: list[Callable[[], object]], requests: int, repeats: int) -> float:
    calls[0]()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for call in calls:
            call()
        best = min(best, time.perf_counter() - start)
    return round(requests / best, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser, device=False, threads=False)
    parser.add_argument("--threads", type=int, default=1, help="torch and onnxruntime intra-op threads (default 1)")
    parser.add_argument("--candidates", type=int, default=800)
    parser.add_argument("--requests", type=int, default=1024, help="requests of the throughput measurement")
    parser.add_argument("--chunk", type=int, default=128, help="requests per call in the throughput measurement")
    parser.add_argument("--reranker", default="exact", choices=["greedy", "exact", "beam_search"])
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--calls", type=int, default=300, help="calls of the batch-1 latency measurement")
    parser.add_argument("--repeats", type=int, default=3, help="passes of the throughput measurement (best kept)")
    parser.add_argument("--workdir", default=None, help="where the artefacts are written (a temporary folder)")
    args = parse_arguments(parser)
    apply_threads(args.threads)
    import onnxruntime

    network = make_network()
    reranker = registry.build("rerankers", args.reranker, threads=args.threads)
    folder = Path(args.workdir or tempfile.mkdtemp(prefix="stcrank-serving-"))
    spec, module = pipeline_graph(network, FEATURE_SIZES, LinearEnsemble(WEIGHTS), reranker, args.k, "sdr")
    files = write_graph(spec, module, folder)
    exported = torch.export.load(str(files["pt2"])).module()
    session_options = onnxruntime.SessionOptions()
    session_options.intra_op_num_threads = args.threads
    session_options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(files["onnx"]), session_options, providers=["CPUExecutionProvider"])
    eager = eager_pipeline(network, reranker, args.k)
    names = [tensor.name for tensor in spec.inputs]

    def servers(inputs: dict[str, torch.Tensor]) -> dict[str, Callable[[], object]]:
        tensors = [inputs[name] for name in names]
        feeds = {name: inputs[name].numpy() for name in names}
        return {
            "eager": lambda: eager(inputs),
            "exported": lambda: exported(*tensors),
            "onnxruntime": lambda: session.run(["order"], feeds),
        }

    single = make_inputs(network, 1, args.candidates, seed=0)
    with torch.no_grad():
        eager_list = eager(single).numpy()
        agree = np.array_equal(servers(single)["exported"]()[0].numpy(), eager_list) and np.array_equal(
            servers(single)["onnxruntime"]()[0], eager_list
        )
    started_load = machine(args)["load_average_1min"]
    with torch.no_grad():
        result_latency = {name: latency(call, args.calls) for name, call in servers(single).items()}
        result_latency["floor"] = latency(floor_products(network, 1, args.candidates), args.calls)
        chunks = [make_inputs(network, min(args.chunk, args.requests - s), args.candidates, seed=s + 1)
                  for s in range(0, args.requests, args.chunk)]  # fmt: skip
        per_chunk = [servers(chunk) for chunk in chunks]
        result_throughput = {
            name: throughput([server[name] for server in per_chunk], args.requests, args.repeats)
            for name in ("eager", "exported", "onnxruntime")
        }
        floors = [floor_products(network, len(chunk["item_price"]), args.candidates) for chunk in chunks]
        result_throughput["floor"] = throughput(floors, args.requests, args.repeats)
    p99 = {name: figures["p99_ms"] for name, figures in result_latency.items()}
    out = {
        "benchmark": "serving",
        "settings": {
            "threads": args.threads,
            "candidates": args.candidates,
            "requests": args.requests,
            "chunk": args.chunk,
            "reranker": args.reranker,
            "k": args.k,
            "network": "MMoE(cvr, vtr, sdr; 4 experts [256, 128]; towers [64]; embeddings 16)",
        },
        "same_lists": agree,
        "latency_batch1": result_latency,
        "throughput_requests_per_s": result_throughput,
        "ratios": {
            "p99_over_eager": {name: round(value / p99["eager"], 3) for name, value in p99.items()},
            "p99_over_floor": {name: round(value / p99["floor"], 3) for name, value in p99.items()},
            "throughput_eager_over": {
                name: round(result_throughput["eager"] / value, 3) for name, value in result_throughput.items()
            },
            "throughput_floor_over": {
                name: round(result_throughput["floor"] / value, 3) for name, value in result_throughput.items()
            },
        },
        "machine": {**machine(args), "load_average_1min_at_start": started_load},
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
