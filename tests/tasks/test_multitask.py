import pytest
import torch
from lightning.pytorch import Trainer

from stcrank.data.eshop.datamodule import EShopDataModule
from stcrank.models.mmoe import MMoE
from stcrank.tasks.multitask import MultiTaskRankingTask, masked_task_loss
from stcrank.tuning.predictions import read_predictions
from stcrank_plugins.labels.eshop import SwipeDownLabel, WatchThresholdLabel


def test_masked_task_loss_matches_hand_computation():
    logits = torch.tensor([0.0, 2.0, -1.0, 3.0])
    target = torch.tensor([1.0, 0.0, 1.0, 1.0])
    mask = torch.tensor([True, True, False, True])
    weight = torch.tensor([1.0, 0.5, 1.0, 0.0])
    bce = -(target * torch.log(torch.sigmoid(logits)) + (1 - target) * torch.log(1 - torch.sigmoid(logits)))
    expected = (bce[0] * 1 + bce[1] * 0.5) / 1.5
    assert torch.isclose(masked_task_loss(logits, target, mask, weight), expected)
    # nothing counts: the denominator is max(1, 0) and the loss 0
    assert masked_task_loss(logits, target, torch.zeros(4, dtype=torch.bool), weight) == 0


def test_loss_weights_must_name_heads():
    with pytest.raises(ValueError, match="sdr"):
        MultiTaskRankingTask(lambda s: MMoE(s, tasks=["cvr"]), loss_weights={"sdr": 1.0}, feature_sizes={"user_id": 3})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """An MMoE trained briefly on simulated logs with a known answer (the simulator's truth)."""
    from stcrank.data.eshop.synth import synth_eshop

    root = tmp_path_factory.mktemp("mmoe") / "logs"
    synth_eshop(out=str(root), users=300, sessions=12_000, items=800, candidates=60, seed=3)
    labels = {"cvr": "cvr", "vtr": WatchThresholdLabel(5.0), "sdr": SwipeDownLabel()}
    dm = EShopDataModule(str(root), labels=labels, batch_size=256, val_fraction=0.2, test_fraction=0.1)
    path = root.parent / "val.parquet"
    task = MultiTaskRankingTask(
        lambda sizes: MMoE(sizes, embedding_dim=8, num_experts=4, expert_hidden=[64, 32], tower_hidden=[16]),
        lr=3e-3,
        feature_sizes=dm.feature_sizes,
        predictions_path=str(path),
    )
    trainer = Trainer(max_epochs=3, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    # One intra-op thread: a small network on a shared machine runs many times slower when oversubscribed.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        trainer.fit(task, datamodule=dm)
    finally:
        torch.set_num_threads(threads)
    return task, dm, trainer, path, root


def test_mmoe_recovers_the_ground_truth_ordering(trained):
    task, dm, trainer, _, _ = trained
    metrics = trainer.validate(task, datamodule=dm, verbose=False)[0]
    for name in ("cvr", "vtr", "sdr"):
        assert metrics[f"val/auc_{name}"] > 0.6, metrics
    assert metrics["val/auc_sum"] == pytest.approx(sum(metrics[f"val/auc_{t}"] for t in ("cvr", "vtr", "sdr")))


def test_logged_gaucs_equal_the_functional_gauc_of_the_predictions(trained):
    from stcrank.metrics.gauc import group_auc

    task, dm, trainer, _, _ = trained
    metrics = trainer.validate(task, datamodule=dm, verbose=False)[0]
    task.eval()
    columns: dict[str, list[torch.Tensor]] = {}
    with torch.no_grad():
        for batch in dm.val_dataloader():
            probability = task.predict_probabilities(batch)
            for name in task.tasks:
                keep = batch[f"mask_{name}"] & (batch[f"weight_{name}"] > 0)
                columns.setdefault(f"p_{name}", []).append(probability[name][keep])
                columns.setdefault(f"y_{name}", []).append(batch[f"label_{name}"][keep].long())
                columns.setdefault(f"user_{name}", []).append(batch["user_id"][keep])
                columns.setdefault(f"request_{name}", []).append(batch["request_id"][keep])
    flat = {key: torch.cat(parts) for key, parts in columns.items()}
    for name in task.tasks:
        for grouping in ("user", "request"):
            expected = group_auc(flat[f"p_{name}"], flat[f"y_{name}"], flat[f"{grouping}_{name}"])
            assert 0 < float(expected.gauc) < 1
            assert metrics[f"val/gauc_{grouping}_{name}"] == pytest.approx(float(expected.gauc), abs=1e-6)
            assert metrics[f"val/gauc_{grouping}_excluded_{name}"] == float(expected.num_excluded)


def test_predict_writes_the_cached_predictions_file(trained):
    task, dm, trainer, path, _ = trained
    trainer.predict(task, datamodule=dm)
    cached = read_predictions(path)
    assert cached.tasks == ("cvr", "vtr", "sdr")
    assert cached.num_rows == len(dm.splits["val"])
    assert {"request_id", "session_id", "position"} <= set(cached.extra)


@pytest.mark.slow
def test_ddp_masked_aucs_equal_one_process(eshop_store, tmp_path):
    import csv
    import os
    import subprocess
    import sys
    from pathlib import Path

    from stcrank.cli import main

    config = Path(__file__).resolve().parents[2] / "configs/experiments/stcrank/moc_base.yaml"
    args = ["test", "-c", str(config), f"--data.root={eshop_store}", "--seed_everything=0", "--data.eval_batch_size=13"]
    args += ["--untrained=true"]  # the metrics of the seeded initial weights, on purpose
    single = main([*args, f"--trainer.default_root_dir={tmp_path}", f"--trainer.logger.init_args.save_dir={tmp_path}"])
    single = {k: float(v) for k, v in single.trainer.callback_metrics.items()}
    root = tmp_path / "ddp"
    command = [sys.executable, "-m", "stcrank", *args, f"--trainer.default_root_dir={root}"]
    command += [f"--trainer.logger.init_args.save_dir={root}", "--trainer.strategy=ddp", "--trainer.accelerator=cpu"]
    command += ["--trainer.devices=2"]
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    rows = list(csv.DictReader(next(root.rglob("metrics.csv")).open()))
    ddp = {key: float(value) for row in rows for key, value in row.items() if key.startswith("test/") and value}
    assert {"test/auc_cvr", "test/auc_vtr", "test/auc_sum"} <= set(single) and set(single) == set(ddp)
    assert {"test/gauc_user_cvr", "test/gauc_request_vtr"} <= set(single)
    for name in ("test/auc_cvr", "test/auc_vtr", "test/auc_sum", "test/gauc_user_cvr", "test/gauc_request_vtr"):
        assert ddp[name] == pytest.approx(single[name], abs=1e-6), name
    # the loss is a mean of per-batch means: batches differ between one and two processes
    assert ddp["test/loss"] == pytest.approx(single["test/loss"], rel=0.02)


def _moc(config: str, store, tmp_path, *extra):
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "configs/experiments/stcrank" / config
    return ["-c", str(path), f"--data.root={store}", f"--trainer.logger.init_args.save_dir={tmp_path}", *extra]


def test_predict_writes_every_head_with_ids_for_tune(eshop_store, tmp_path):
    from stcrank.cli import main

    path = tmp_path / "mmoe.parquet"
    cli = main(["predict", *_moc("moc_base.yaml", eshop_store, tmp_path), "--untrained", f"--predictions={path}"])
    cached = read_predictions(path)
    assert cached.tasks == ("cvr", "vtr")
    assert cached.num_rows == len(cli.datamodule.splits["val"])
    assert {"request_id", "item_id", "session_id", "position"} <= set(cached.extra)
    assert torch.equal(cached.extra["item_id"], cli.datamodule.splits["val"].columns["item_id"])


def test_labels_and_heads_must_match(eshop_store, tmp_path):
    from stcrank.cli import main
    from stcrank.errors import ConfigError

    fit = ["fit", "--trainer.fast_dev_run=true"]
    with pytest.raises(ConfigError, match=r"--data\.labels defines \['vtr'\], but the network has no head"):
        main(
            [
                *fit,
                *_moc("single_objective.yaml", eshop_store, tmp_path, "--data.labels={cvr: cvr, vtr: vtr_threshold}"),
            ]
        )
    with pytest.raises(ConfigError, match=r"the network has heads \['vtr'\] with no label in --data\.labels"):
        main([*fit, *_moc("moc_base.yaml", eshop_store, tmp_path, "--data.labels={cvr: cvr}")])


def test_a_constant_training_label_is_refused(eshop_store, tmp_path):
    from stcrank.cli import main
    from stcrank.errors import ConfigError

    never = "--data.labels.vtr.init_args.threshold_s=1e9"  # no view is that long: vtr is 0 everywhere
    with pytest.raises(ConfigError, match=r"task 'vtr' has label 0 on all \d+ samples in the train split"):
        main(["fit", "--trainer.fast_dev_run=true", *_moc("moc_base.yaml", eshop_store, tmp_path, never)])
