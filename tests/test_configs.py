"""Every experiment config in configs/ trains and tests for one batch (``fast_dev_run``) on generated data."""

import json
from pathlib import Path

import pytest

from stcrank.cli import main

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
EXPERIMENTS = sorted((CONFIGS / "experiments").rglob("*.yaml"))


def _dataset_fixture(config: Path) -> str:
    family = config.relative_to(CONFIGS / "experiments").parts[0]
    return {"recflow": "recflow_store", "lcron": "recflow_store", "stcrank": "eshop_store"}[family]


def test_every_piece_is_used_by_an_experiment():
    used = {
        (experiment.parent / line.split(":", 1)[1].strip()).resolve()
        for experiment in EXPERIMENTS
        for line in experiment.read_text().splitlines()
        if line.split(":", 1)[0] in ("model", "data", "trainer") and line.strip().endswith(".yaml")
    }
    pieces = {path.resolve() for folder in ("data", "model", "trainer") for path in (CONFIGS / folder).glob("*.yaml")}
    assert pieces <= used, f"config pieces no experiment uses: {sorted(str(p) for p in pieces - used)}"


@pytest.mark.slow
@pytest.mark.parametrize("config", EXPERIMENTS, ids=[str(p.relative_to(CONFIGS)) for p in EXPERIMENTS])
def test_experiment_config_runs_with_fast_dev_run(config, request, tmp_path):
    fixture = _dataset_fixture(config)
    store = request.getfixturevalue(fixture)
    args = ["fit", "-c", str(config), f"--data.root={store}", f"--trainer.default_root_dir={tmp_path}"]
    if fixture == "recflow_store":
        # Validate on the test day: one fit then exercises training and the evaluation path of the config.
        args.append(f"--data.val_day={json.loads((store / 'manifest.json').read_text())['test_day']}")
    fitted = main([*args, "--trainer.fast_dev_run=true"])
    assert fitted.trainer.state.finished
    assert any(name.startswith("val/") for name in fitted.trainer.callback_metrics), "evaluation did not run"
