"""Training and evaluation throughput of the coarse-ranking and ranking networks through the real data module.

Generates (or reuses) a synthetic RecFlow store, then for DSSM and DIN, each with and without the competing-item
sequence, measures training samples per second (loader + forward + backward + Adam step, batch 1024) and
evaluation requests per second (stage-candidate scoring over the test day's candidates loader), each split by
phase (loader, forward, backward; loader, scoring). Prints one JSON object.

    python benchmarks/bench_ranking_models.py [--workdir DIR] [--users 600] [--steps 20] [--threads N]
        [--only dssm_competing din_competing]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from stcrank.data.recflow.importer import import_recflow
from stcrank.data.recflow.ranking_data import RecFlowRankingDataModule
from stcrank.data.recflow.synth import synth_recflow
from stcrank.models.din import DIN
from stcrank.models.dssm import DSSM
from stcrank.tasks.ranking import RankingTask


def ensure_store(workdir: Path, users: int) -> Path:
    """Generate and import a synthetic store under ``workdir`` unless it is there already."""
    store = workdir / f"store-{users}"
    if not (store / "manifest.json").is_file():
        release = workdir / f"release-{users}"
        synth_recflow(out=str(release), users=users, days=3, seed=0, overwrite=True)
        import_recflow(src=str(release), dst=str(store), overwrite=True)
    return store


def measure(store: Path, network: type, competing: bool, steps: int, batch_size: int) -> dict[str, float]:
    """Training samples/s and evaluation requests/s of one network, with the time split by phase.

    Training time is split into the loader (``next`` on the data loader), the forward pass and the backward pass
    with the optimiser step; evaluation time into the loader and the scoring, in milliseconds per batch.
    """
    data = RecFlowRankingDataModule(
        str(store), batch_size=batch_size, eval_batch_size=256, competing_stage="rank_pos" if competing else None
    )
    task = RankingTask(network=lambda sizes: network(sizes, competing=competing), feature_sizes=data.feature_sizes)
    optimizer = torch.optim.Adam(task.parameters(), lr=1e-2)
    loader = data.train_dataloader()
    iterator = iter(loader)
    next(iterator)  # the day's load is a one-off per day, not a per-step cost
    samples, done = 0, 0
    phases = {"load": 0.0, "forward": 0.0, "backward": 0.0}
    while done < steps:
        started = time.perf_counter()
        try:
            batch = next(iterator)
        except StopIteration:
            iterator = iter(loader)
            continue
        loaded = time.perf_counter()
        optimizer.zero_grad()
        loss = task.training_step(batch, done)
        forwarded = time.perf_counter()
        loss.backward()
        optimizer.step()
        phases["load"] += loaded - started
        phases["forward"] += forwarded - loaded
        phases["backward"] += time.perf_counter() - forwarded
        samples += len(batch["label"])
        done += 1
    train = samples / sum(phases.values())
    candidates = data.test_dataloader()[1]
    list(zip(range(1), candidates, strict=False))  # load the test day
    requests, batches, eval_load, eval_score = 0, 0, 0.0, 0.0
    with torch.no_grad():
        started = time.perf_counter()
        for batch in candidates:
            loaded = time.perf_counter()
            task.network.score_candidates(batch)
            scored = time.perf_counter()
            eval_load += loaded - started
            eval_score += scored - loaded
            requests += len(batch["request_id"])
            batches += 1
            started = time.perf_counter()
    return {
        "train_samples_per_s": round(train, 1),
        "train_load_ms": round(1000 * phases["load"] / steps, 1),
        "train_forward_ms": round(1000 * phases["forward"] / steps, 1),
        "train_backward_ms": round(1000 * phases["backward"] / steps, 1),
        "eval_requests_per_s": round(requests / (eval_load + eval_score), 1),
        "eval_load_ms": round(1000 * eval_load / batches, 1),
        "eval_score_ms": round(1000 * eval_score / batches, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=None, help="where the release and store go (reused)")
    parser.add_argument("--users", type=int, default=600)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--only", nargs="+", default=None, help="networks to run, e.g. dssm_competing din_competing")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="stcrank-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    store = ensure_store(workdir, args.users)
    torch.manual_seed(0)
    results = {}
    for name, network in (("dssm", DSSM), ("din", DIN)):
        for competing in (False, True):
            key = f"{name}_competing" if competing else name
            if args.only is not None and key not in args.only:
                continue
            results[key] = measure(store, network, competing, args.steps, args.batch_size)
    print(
        json.dumps(
            {
                "store": str(store),
                "batch_size": args.batch_size,
                "steps": args.steps,
                "threads": torch.get_num_threads(),
                "results": results,
            }
        )
    )


if __name__ == "__main__":
    main()
