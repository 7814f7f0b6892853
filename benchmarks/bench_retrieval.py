"""Throughput of SASRec retrieval: training samples/s through the real data module, evaluation requests/s.

Generates a synthetic release (2 training days and a test day), imports it, then measures

* data only: retrieval training batches (4096 positives x 200 negatives) built and sampled per second;
* training: forward + BPR/FS-LTR backward + Adam step, batches coming from the data module (uniform negatives,
  and stage hard negatives as in the ``fsltr`` experiment);
* evaluation: test requests per second through ``RetrievalTask`` (user vectors, exact chunked top-1000 over the
  store's exposed corpus, Recall/NDCG update), and over a large random corpus (``--corpus``) to show the scaling
  towards the release's millions of videos.

Prints one JSON object.

    python benchmarks/bench_retrieval.py [--users 3000] [--corpus 1000000] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import functools
import json
import tempfile
import time
from pathlib import Path

import torch

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


def _train_rate(module: RecFlowRetrievalDataModule, loss: str, target: str) -> dict[str, float]:
    torch.manual_seed(0)
    task = RetrievalTask(functools.partial(SASRec), loss=loss, target=target, feature_sizes=module.feature_sizes)
    optimizer = task.configure_optimizers()
    started, samples, losses = time.perf_counter(), 0, []
    for batch in module.train_dataloader():
        optimizer.zero_grad()
        value = task.training_step(batch, 0)
        value.backward()
        optimizer.step()
        samples += len(batch["items"])
        losses.append(float(value))
    seconds = time.perf_counter() - started
    return {"samples": samples, "samples_per_s": samples / seconds, "first_loss": losses[0], "last_loss": losses[-1]}


def _eval_rate(module: RecFlowRetrievalDataModule) -> dict[str, float]:
    torch.manual_seed(0)
    task = RetrievalTask(functools.partial(SASRec), feature_sizes=module.feature_sizes)
    ids = module.retrieval_corpus()
    with torch.no_grad():
        task._corpus = (ids, task.network.item_vectors(ids))
        started, requests = time.perf_counter(), 0
        for batch in module.test_dataloader()[0]:
            task._evaluation_step(task.test_metrics, batch)
            requests += len(batch["seq"])
        values = task.test_metrics.compute()
    seconds = time.perf_counter() - started
    return {
        "requests": requests,
        "corpus": len(ids),
        "requests_per_s": requests / seconds,
        "recall@1000": float(values["recall@1000"]),
    }


def _large_corpus_rate(size: int, requests: int, batch: int, dim: int = 8) -> dict[str, float]:
    generator = torch.Generator().manual_seed(0)
    corpus = torch.randn(size, dim, generator=generator)
    users = torch.randn(requests, dim, generator=generator)
    positives = torch.randint(size, (requests, 4), generator=generator)
    metric = CorpusRetrievalMetrics((50, 100, 500, 1000))
    started = time.perf_counter()
    for start in range(0, requests, batch):
        _, rows = topk_over_corpus(users[start : start + batch], corpus, 1000)
        part = positives[start : start + batch]
        metric.update(rows, part, torch.ones_like(part, dtype=torch.bool))
    seconds = time.perf_counter() - started
    return {"corpus": size, "requests": requests, "batch": batch, "requests_per_s": requests / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=None, help="where the release and store go (reused)")
    parser.add_argument("--users", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--corpus", type=int, default=1_000_000, help="size of the large random corpus (0: skip)")
    parser.add_argument("--corpus-requests", type=int, default=1800)
    args = parser.parse_args()

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-retrieval-"))
    workdir.mkdir(parents=True, exist_ok=True)
    store = str(_store(workdir, args.users))
    uniform = RecFlowRetrievalDataModule(store, batch_size=args.batch_size)
    fsltr = RecFlowRetrievalDataModule(
        store,
        batch_size=args.batch_size,
        negative_sampler=StageHardNegativeSampler({"realshow": 1, "coarse_neg": 1, "prerank_neg": 1}),
    )
    result = {
        "torch_threads": torch.get_num_threads(),
        "store": {"users": args.users, "train_days": uniform.train_days, "test_day": uniform.test_day},
        "data_uniform": _data_rate(uniform),
        "data_stage_hard": _data_rate(fsltr),
        "train_bpr_uniform": _train_rate(uniform, "bpr", "label"),
        "train_fsltr_stage_hard": _train_rate(fsltr, "fs_ltr", "priority"),
        "eval_store_corpus": _eval_rate(uniform),
    }
    if args.corpus:
        result["eval_large_corpus"] = _large_corpus_rate(args.corpus, args.corpus_requests, 900)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
