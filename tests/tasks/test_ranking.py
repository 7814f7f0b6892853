import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from stcrank.cli import main

EXPERIMENT = Path(__file__).resolve().parents[2] / "configs/experiments/recflow/rank/din_baseline.yaml"


def _test_day(store: Path) -> str:
    return json.loads((store / "manifest.json").read_text())["test_day"]


@pytest.fixture(scope="module")
def trained(recflow_store, tmp_path_factory):
    root = tmp_path_factory.mktemp("din")
    args = ["-c", str(EXPERIMENT), f"--data.root={recflow_store}", f"--trainer.default_root_dir={root}"]
    args += [f"--trainer.logger.init_args.save_dir={root}", "--data.batch_size=256", "--seed_everything=0"]
    fitted = main(["fit", *args])
    checkpoint = Path(fitted.trainer.checkpoint_callback.last_model_path)
    tested = main(["test", *args, f"--ckpt_path={checkpoint}"])
    return {"args": args, "checkpoint": checkpoint, "metrics": dict(tested.trainer.callback_metrics)}


@pytest.mark.slow
def test_din_learns_the_generated_preference(trained):
    metrics = trained["metrics"]
    assert metrics["test/auc"] > 0.6, metrics
    assert 0 < metrics["test/logloss"] < 0.7
    for k in (50, 100, 200):
        assert 0 <= metrics[f"test/recflow_recall@{k}"] <= 1
        assert 0 <= metrics[f"test/ndcg@{k}"] <= 1
    assert metrics["test/recflow_recall@50"] <= metrics["test/recflow_recall@200"]


@pytest.mark.slow
def test_checkpoint_reloads_with_the_same_metrics(trained):
    again = main(["test", *trained["args"], f"--ckpt_path={trained['checkpoint']}"])
    for name, value in trained["metrics"].items():
        assert torch.isclose(again.trainer.callback_metrics[name], value, atol=1e-6), name


def _fit_metrics(store: Path, root: Path, extra: list[str]) -> dict[str, float]:
    command = [sys.executable, "-m", "stcrank", "fit", "-c", str(EXPERIMENT), f"--data.root={store}"]
    command += [f"--data.val_day={_test_day(store)}", f"--trainer.default_root_dir={root}"]
    command += [f"--trainer.logger.init_args.save_dir={root}", "--seed_everything=0", *extra]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    rows = list(csv.DictReader(next(root.rglob("metrics.csv")).open()))
    return {key: float(value) for row in rows for key, value in row.items() if key.startswith("val/") and value}


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_agrees_with_one_process(recflow_store, tmp_path):
    single = _fit_metrics(recflow_store, tmp_path / "single", ["--data.batch_size=256", "--trainer.devices=1"])
    ddp = _fit_metrics(
        recflow_store,
        tmp_path / "ddp",
        ["--data.batch_size=128", "--trainer.strategy=ddp", "--trainer.accelerator=cpu", "--trainer.devices=2"],
    )
    assert set(single) == set(ddp) and "val/auc" in single
    assert abs(single["val/auc"] - ddp["val/auc"]) < 0.02, (single, ddp)
    assert abs(single["val/logloss"] - ddp["val/logloss"]) < 0.02, (single, ddp)
    assert abs(single["val/recflow_recall@50"] - ddp["val/recflow_recall@50"]) < 0.05, (single, ddp)
