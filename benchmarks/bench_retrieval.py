"""Throughput of SASRec retrieval: training samples/s through the real data module, evaluation requests/s.

Generates a synthetic release (2 training days and a test day), imports it, then measures

* data only: retrieval training batches (4096 positives x 200 negatives) built and sampled per second;
* training: forward + BPR/FS-LTR backward + Adam step, batches coming from the data module (uniform negatives,
  and stage hard negatives as in the ``fsltr`` experiment);
* evaluation: test requests per second through ``RetrievalTask`` (user vectors, exact chunked top-1000 over the
  store's exposed corpus, Recall/NDCG update), and over a large random corpus (``--corpus``) to show the scaling
  towards the release's millions of videos.

Prints one JSON object (``--load both``: idle and with a competing busy loop, and the ratio busy / idle).

    python benchmarks/bench_retrieval.py [--users 3000] [--corpus 1000000] [--workdir DIR] [--threads N]
        [--device cpu|cuda] [--load idle|busy|both]
"""

from __future__ import annotations

import argparse
import functools
import json
import tempfile
import time
from pathlib import Path

import torch
from bench_ranking_models import Clock
from harness import add_common_arguments, apply_threads, check_device, machine, parse_arguments, under_loads

from stcrank.data.recflow.importer import import_recflow
from stcrank.data.recflow.retrieval import RecFlowRetrievalDataModule
from stcrank.data.recflow.synth import synth_recflow
from stcrank.metrics.ranking import CorpusRetrievalMetrics
from stcrank.metrics.retrieval import topk_over_corpus
from stcrank.models.sasrec import SASRec
from stcrank.tasks.retrieval import RetrievalTask
from stcrank_plugins.negative_samplers.stage import StageHardNegativeSampler


def _store(workdir: Path, users: int) -> Path:
    store = workdir / f"store-{users}"
    if not (store / "manifest.json").is_file():
        release = workdir / f"release-{users}"
        synth_recflow(out=str(release), users=users, days=3, seed=0)
        import_recflow(src=str(release), dst=str(store), overwrite=True)
    return store


def _data_rate(module: RecFlowRetrievalDataModule) -> dict[str, float]:
    started, samples, batches = time.perf_counter(), 0, 0
    for batch in module.train_dataloader():
        samples += len(batch["items"])
        batches += 1
    seconds = time.perf_counter() - started
    return {"samples": samples, "batches": batches, "samples_per_s": samples / seconds}


def _to(batch: dict[str, torch.Tensor], device: str) -> dict[str, torch.Tensor]:
    return {key: value.to(device) for key, value in batch.items()}


def _train_rate(module: RecFlowRetrievalDataModule, loss: str, target: str, device: str) -> dict[str, float]:
    torch.manual_seed(0)
    task = RetrievalTask(functools.partial(SASRec), loss=loss, target=target, feature_sizes=module.feature_sizes)
    task = task.to(device)
    optimizer = task.configure_optimizers()
    clock = Clock(device)
    started, samples, losses = clock()[0], 0, []
    for batch in module.train_dataloader():
        batch = _to(batch, device)
        optimizer.zero_grad()
        value = task.training_step(batch, 0)
        value.backward()
        optimizer.step()
        samples += len(batch["items"])
        losses.append(float(value))
    seconds = clock()[0] - started
    return {"samples": samples, "samples_per_s": samples / seconds, "first_loss": losses[0], "last_loss": losses[-1]}


def _eval_rate(module: RecFlowRetrievalDataModule, device: str) -> dict[str, float]:
    torch.manual_seed(0)
    task = RetrievalTask(functools.partial(SASRec), feature_sizes=module.feature_sizes).to(device)
    ids = module.retrieval_corpus().to(device)
    clock = Clock(device)
    with torch.no_grad():
        task._corpus = (ids, task.network.item_vectors(ids))
        started, requests = clock()[0], 0
        for batch in module.test_dataloader()[0]:
            task._evaluation_step(task.test_metrics, _to(batch, device))
            requests += len(batch["seq"])
        values = task.test_metrics.compute()
    seconds = clock()[0] - started
    return {
        "requests": requests,
        "corpus": len(ids),
        "requests_per_s": requests / seconds,
        "recall@1000": float(values["recall@1000"]),
    }


def _large_corpus_rate(size: int, requests: int, batch: int, device: str, dim: int = 8) -> dict[str, float]:
    generator = torch.Generator().manual_seed(0)
    corpus = torch.randn(size, dim, generator=generator).to(device)
    users = torch.randn(requests, dim, generator=generator).to(device)
    positives = torch.randint(size, (requests, 4), generator=generator).to(device)
    metric = CorpusRetrievalMetrics((50, 100, 500, 1000)).to(device)
    clock = Clock(device)
    started = clock()[0]
    for start in range(0, requests, batch):
        _, rows = topk_over_corpus(users[start : start + batch], corpus, 1000)
        part = positives[start : start + batch]
        metric.update(rows, part, torch.ones_like(part, dtype=torch.bool))
    seconds = clock()[0] - started
    return {"corpus": size, "requests": requests, "batch": batch, "requests_per_s": requests / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=None, help="where the release and store go (reused)")
    parser.add_argument("--users", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--corpus", type=int, default=1_000_000, help="size of the large random corpus (0: skip)")
    parser.add_argument("--corpus-requests", type=int, default=1800)
    add_common_arguments(parser)
    args = parse_arguments(parser)
    apply_threads(args.threads)
    device = check_device(args.device)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-retrieval-"))
    workdir.mkdir(parents=True, exist_ok=True)
    store = str(_store(workdir, args.users))
    uniform = RecFlowRetrievalDataModule(store, batch_size=args.batch_size)
    fsltr = RecFlowRetrievalDataModule(
        store,
        batch_size=args.batch_size,
        negative_sampler=StageHardNegativeSampler({"realshow": 1, "coarse_neg": 1, "prerank_neg": 1}),
    )

    def run() -> dict:
        result = {
            "data_uniform": _data_rate(uniform),
            "data_stage_hard": _data_rate(fsltr),
            "train_bpr_uniform": _train_rate(uniform, "bpr", "label", device),
            "train_fsltr_stage_hard": _train_rate(fsltr, "fs_ltr", "priority", device),
            "eval_store_corpus": _eval_rate(uniform, device),
        }
        if args.corpus:
            result["eval_large_corpus"] = _large_corpus_rate(args.corpus, args.corpus_requests, 900, device)
        return result

    def headline(figures: dict) -> dict:
        return {
            name: entry.get("samples_per_s", entry.get("requests_per_s"))
            for name, entry in figures.items()
            if isinstance(entry, dict)
        }

    report = {
        "store": {"users": args.users, "train_days": uniform.train_days, "test_day": uniform.test_day},
        "machine": machine(args),
        "results": under_loads(run, args, headline),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
