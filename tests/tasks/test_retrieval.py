import functools
import math

import lightning as L
import pytest
import torch

from stcrank.data.recflow.retrieval import RecFlowRetrievalDataModule
from stcrank.errors import ConfigError
from stcrank.models.sasrec import SASRec
from stcrank.plugins import Loss
from stcrank.tasks.retrieval import RetrievalTask


def _trainer(**kwargs) -> L.Trainer:
    return L.Trainer(
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        **kwargs,
    )


def _task(module: RecFlowRetrievalDataModule, seed: int = 0, **kwargs) -> RetrievalTask:
    torch.manual_seed(seed)
    return RetrievalTask(functools.partial(SASRec), feature_sizes=module.feature_sizes, **kwargs)


def _test_metrics(task: RetrievalTask, module: RecFlowRetrievalDataModule) -> dict[str, float]:
    return {k: float(v) for k, v in _trainer().test(task, datamodule=module, verbose=False)[0].items()}


def test_metrics_equal_a_brute_force_ranking_of_the_corpus(recflow_store):
    module = RecFlowRetrievalDataModule(str(recflow_store), eval_batch_size=37)
    ks = [5, 20, 100, 1000]  # the tiny corpus has fewer than 1000 items: @1000 holds the whole corpus
    task = _task(module, ks=ks, chunk_size=100)
    metrics = _test_metrics(task, module)

    corpus = module.retrieval_corpus()
    assert len(corpus) < 1000
    hits, gains, count = torch.zeros(len(ks)), torch.zeros(len(ks)), 0
    with torch.no_grad():
        vectors = task.network.item_vectors(corpus)
        for batch in module.test_dataloader()[0]:
            scores = task.network.user_vector(batch["seq"], batch["seq_mask"]) @ vectors.T
            order = torch.argsort(scores, dim=1, descending=True, stable=True)
            for row in range(len(order)):
                ranked = corpus[order[row]].tolist()
                for item in batch["positives"][row][batch["positive_mask"][row]].tolist():
                    rank = ranked.index(item)
                    count += 1
                    for i, k in enumerate(ks):
                        if rank < k:
                            hits[i] += 1
                            gains[i] += 1 / math.log2(rank + 2)
    for i, k in enumerate(ks):
        assert metrics[f"test/recflow_recall@{k}"] == pytest.approx(float(hits[i] / count), abs=1e-6)
        assert metrics[f"test/recflow_ndcg@{k}"] == pytest.approx(float(gains[i] / count), abs=1e-6)
    assert metrics["test/recflow_recall@1000"] == pytest.approx(1.0)


@pytest.mark.slow
def test_training_beats_a_random_model_on_recall(recflow_store):
    module = RecFlowRetrievalDataModule(str(recflow_store), batch_size=256, seed=0)
    untrained = _test_metrics(_task(module), module)
    task = _task(module, lr=0.1)
    _trainer(max_epochs=3).fit(task, datamodule=module)
    trained = _test_metrics(task, module)
    corpus_size = len(module.retrieval_corpus())
    for k in (50, 100):
        chance = k / corpus_size
        assert untrained[f"test/recflow_recall@{k}"] < 2 * chance, untrained
        assert trained[f"test/recflow_recall@{k}"] > 2.5 * chance, (trained, chance)
        assert trained[f"test/recflow_ndcg@{k}"] > 2 * untrained[f"test/recflow_ndcg@{k}"]


class _Recorder(Loss):
    """Records the targets it is given and returns a differentiable mean score."""

    def __init__(self) -> None:
        super().__init__()
        self.targets: list[torch.Tensor] = []

    def forward(self, scores, target, mask, weight=None):
        self.targets.append(target.detach().clone())
        return scores[mask].mean()


@pytest.mark.parametrize("target", ["label", "priority"])
def test_the_loss_gets_labels_or_priorities(recflow_store, target):
    module = RecFlowRetrievalDataModule(str(recflow_store), batch_size=64)
    recorder = _Recorder()
    task = _task(module, loss=recorder, target=target)
    batch = next(iter(module.train_dataloader()))
    loss = task.training_step(batch, 0)
    assert torch.isfinite(loss)
    expected = batch["label"] if target == "label" else batch["item_priority"].float()
    assert torch.equal(recorder.targets[0], expected)


def test_a_cascade_batch_trains_with_fs_ltr(recflow_store):
    from stcrank_plugins.negative_samplers.stage import StageHardNegativeSampler

    sampler = StageHardNegativeSampler({"coarse_neg": 1, "prerank_neg": 1}, num_negatives=20)
    module = RecFlowRetrievalDataModule(str(recflow_store), batch_size=64, negative_sampler=sampler)
    task = _task(module, loss="fs_ltr", target="priority")
    batch = next(iter(module.train_dataloader()))
    loss = task.training_step(batch, 0)
    loss.backward()
    assert torch.isfinite(loss) and task.network.item_embedding.weight.grad.abs().sum() > 0


def test_evaluation_needs_the_data_modules_corpus(recflow_store):
    module = RecFlowRetrievalDataModule(str(recflow_store))
    task = _task(module)
    with pytest.raises(RuntimeError, match="retrieval_corpus"):
        _trainer().test(task, dataloaders=module.test_dataloader())


def test_bad_arguments_are_refused(recflow_store):
    module = RecFlowRetrievalDataModule(str(recflow_store))
    with pytest.raises(ValueError, match="feature_sizes"):
        RetrievalTask(functools.partial(SASRec))
    with pytest.raises(ConfigError, match=r"--model\.target clicks: choose label or priority"):
        _task(module, target="clicks")
    with pytest.raises(ConfigError, match=r"--model\.network Linear has no user_vector\(\)"):
        RetrievalTask(lambda sizes: torch.nn.Linear(2, 2), feature_sizes=module.feature_sizes)


def _test_run_metrics(config, store, root, extra):
    """``stcrank test`` of the seeded initial model; one process in-process, or 2 gloo processes in a subprocess."""
    import csv
    import os
    import subprocess
    import sys

    from stcrank.cli import main

    args = ["test", "-c", str(config), f"--data.root={store}", f"--trainer.default_root_dir={root}"]
    args += [f"--trainer.logger.init_args.save_dir={root}", "--seed_everything=0", "--untrained", "true", *extra]
    if "--trainer.devices=2" not in extra:
        return {k: float(v) for k, v in main(args).trainer.callback_metrics.items()}
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "stcrank", *args], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = list(csv.DictReader(next(root.rglob("metrics.csv")).open()))
    return {key: float(value) for row in rows for key, value in row.items() if key.startswith("test/") and value}


DDP = ["--trainer.strategy=ddp", "--trainer.accelerator=cpu", "--trainer.devices=2"]


@pytest.mark.slow
def test_ddp_corpus_metrics_equal_one_process(recflow_store, tmp_path):
    from pathlib import Path

    config = Path(__file__).resolve().parents[2] / "configs/experiments/recflow/retrieval/baseline.yaml"
    extra = ["--data.eval_batch_size=7", "--model.init_args.ks=[5,20,100]"]  # several uneven batches per rank
    single = _test_run_metrics(config, recflow_store, tmp_path / "one", extra)
    ddp = _test_run_metrics(config, recflow_store, tmp_path / "two", [*extra, *DDP])
    assert set(single) == set(ddp) == {f"test/recflow_{m}@{k}" for m in ("recall", "ndcg") for k in (5, 20, 100)}
    assert single["test/recflow_recall@100"] > 0
    for name, value in single.items():
        assert ddp[name] == pytest.approx(value, abs=1e-6), name


def test_predict_writes_each_requests_retrieved_list(recflow_store, tmp_path):
    from pathlib import Path

    import pyarrow.parquet as pq

    from stcrank.cli import main
    from stcrank.tuning.predictions import read_predictions

    config = Path(__file__).resolve().parents[2] / "configs/experiments/recflow/retrieval/baseline.yaml"
    path = tmp_path / "sasrec.parquet"
    args = ["predict", "-c", str(config), f"--data.root={recflow_store}", "--untrained", "--model.init_args.ks=[5,20]"]
    cli = main([*args, f"--trainer.logger.init_args.save_dir={tmp_path}", f"--predictions={path}"])
    rows = pq.read_table(path).to_pylist()
    module = cli.datamodule
    requests = {row["request_id"] for row in rows}
    assert len(rows) == 20 * len(requests)
    evaluation = next(iter(module.predict_dataloader()))
    positives = {
        int(request): set((items[mask] - 1).tolist())
        for request, items, mask in zip(
            evaluation["request_id"], evaluation["positives"], evaluation["positive_mask"], strict=True
        )
    }
    by_request: dict[int, list[dict]] = {}
    for row in rows:
        by_request.setdefault(row["request_id"], []).append(row)
    for request, listed in by_request.items():
        assert [row["rank"] for row in listed] == list(range(1, 21))
        scores = [row["pred_effective_view"] for row in listed]
        assert scores == sorted(scores, reverse=True)
        if request in positives:
            assert [row["label_effective_view"] == 1 for row in listed] == [
                row["item_id"] in positives[request] for row in listed
            ]
    assert read_predictions(path).tasks == ("effective_view",)
