"""A run SIGKILLed mid-epoch and resumed from its last checkpoint ends exactly like an uninterrupted run."""

import csv
import json
import os
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from stcrank.cli import main
from stcrank.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
RESUMABLE = REPO / "configs/trainer/resumable.yaml"


def _args(root: Path, args: list[str], extra: list[str] = ()) -> list[str]:
    out = ["fit", *args, f"--trainer={RESUMABLE}", f"--trainer.default_root_dir={root}"]
    out += [f"--trainer.logger.init_args.save_dir={root}", "--trainer.callbacks.every_n_train_steps=4"]
    return [*out, "--trainer.enable_progress_bar=false", "--seed_everything=0", *extra]


def _fit_in_process(root: Path, args: list[str], extra: list[str] = ()) -> None:
    # One intra-op thread, as in the subprocess: the same kernels, so the same floating-point sums.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        main(_args(root, args, extra))
    finally:
        torch.set_num_threads(threads)


def _fit_killed(root: Path, args: list[str], kill_at: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    killer = ["--trainer.callbacks+=kill_switch.KillAtStep", f"--trainer.callbacks.step={kill_at}"]
    command = [sys.executable, "-m", "stcrank", *_args(root, args, killer)]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)


def _last(root: Path) -> Path:
    # runs/<experiment>/checkpoints/last.ckpt: one folder per experiment, overwritten by a resumed run
    (path,) = root.rglob("checkpoints/last.ckpt")
    return path


def _val_metrics(root: Path, version: int) -> dict[str, float]:
    (path,) = root.rglob(f"version_{version}/metrics.csv")
    rows = list(csv.DictReader(path.open()))
    return {key: float(value) for row in rows for key, value in row.items() if key.startswith("val/") and value}


def _kill_and_resume(tmp_path: Path, args: list[str], kill_at: int) -> tuple[dict, dict, dict]:
    """Returns the uninterrupted run's and the resumed run's last checkpoints, and the killed run's checkpoint."""
    _fit_in_process(tmp_path / "full", args)

    killed_root = tmp_path / "killed"
    killed = _fit_killed(killed_root, args, kill_at)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    resumed_from = torch.load(_last(killed_root), map_location="cpu", weights_only=False)

    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*not resumable.*")  # Lightning's warning for a stateless loader
        _fit_in_process(killed_root, args, ["--ckpt_path=last"])
    load = lambda path: torch.load(path, map_location="cpu", weights_only=False)  # noqa: E731
    return load(_last(tmp_path / "full")), load(_last(killed_root)), resumed_from


def _assert_same_end(tmp_path: Path, uninterrupted: dict, resumed: dict, resumed_from: dict, kill_at: int) -> None:
    # the checkpoint the run resumed from lies strictly inside the epoch, and is behind the kill
    loader_state = resumed_from["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]
    assert 0 < loader_state["batches"] < kill_at and loader_state["epoch"] == 0
    assert resumed["global_step"] == uninterrupted["global_step"] > kill_at
    assert resumed["state_dict"].keys() == uninterrupted["state_dict"].keys()
    for name, value in uninterrupted["state_dict"].items():
        assert torch.equal(resumed["state_dict"][name], value), name  # bit-identical weights
    full, again = _val_metrics(tmp_path / "full", 0), _val_metrics(tmp_path / "killed", 1)
    assert full and full.keys() == again.keys()
    for name, value in full.items():
        assert again[name] == pytest.approx(value, abs=1e-6), name


def test_ranking_killed_mid_epoch_resumes_to_the_same_weights_and_metrics(recflow_store, tmp_path):
    test_day = json.loads((recflow_store / "manifest.json").read_text())["test_day"]
    args = ["-c", str(REPO / "configs/experiments/recflow/rank/din_baseline.yaml"), f"--data.root={recflow_store}"]
    args += [f"--data.val_day={test_day}", "--data.batch_size=256"]  # 12 batches over two days
    uninterrupted, resumed, resumed_from = _kill_and_resume(tmp_path, args, kill_at=6)
    _assert_same_end(tmp_path, uninterrupted, resumed, resumed_from, kill_at=6)


def test_multitask_killed_mid_epoch_resumes_to_the_same_weights_and_metrics(eshop_store, tmp_path):
    args = ["-c", str(REPO / "configs/experiments/stcrank/moc_base.yaml"), f"--data.root={eshop_store}"]
    args += ["--data.batch_size=128", "--trainer.max_epochs=2"]  # 15 batches an epoch: resume inside epoch 0
    uninterrupted, resumed, resumed_from = _kill_and_resume(tmp_path, args, kill_at=7)
    _assert_same_end(tmp_path, uninterrupted, resumed, resumed_from, kill_at=7)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("--data.batch_size=128", r"--data\.batch_size: 256 in the checkpoint, 128 now"),
        ("--data.seed=1", r"--data\.seed: 0 in the checkpoint, 1 now"),
        ("--model.init_args.lr=0.5", r"--model\.init_args\.lr is 0\.5 here but 0\.01 in the checkpoint"),
    ],
    ids=["batch_size", "data_seed", "lr"],
)
def test_resuming_with_another_setting_is_refused_naming_it(recflow_store, tmp_path, change, message):
    args = ["-c", str(REPO / "configs/experiments/recflow/rank/din_baseline.yaml"), f"--data.root={recflow_store}"]
    args += ["--data.batch_size=256", "--trainer.max_steps=3"]
    _fit_in_process(tmp_path, args)
    state = torch.load(_last(tmp_path), map_location="cpu", weights_only=False)
    assert state["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]["batches"] == 3  # mid-epoch
    with pytest.raises(ConfigError, match=message):
        _fit_in_process(tmp_path, [*args, change], [f"--ckpt_path={_last(tmp_path)}"])
