"""Round trip of the third-party example package: install, list, train with its loss, run its tests, uninstall."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "plugins" / "example"
EXPERIMENT = ROOT / "configs/experiments/recflow/rank/din_baseline.yaml"


def _run(*command: str) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{command} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    return result


def _plugins() -> dict:
    return json.loads(_run(sys.executable, "-m", "stcrank", "plugins", "--json").stdout)


@pytest.mark.slow
def test_example_package_round_trip(recflow_store, tmp_path):
    pip = (sys.executable, "-m", "pip")
    assert "focal" not in _plugins()["stcrank.losses"], "stcrank-example is already installed"
    _run(*pip, "install", "--quiet", "--no-deps", "--no-build-isolation", str(EXAMPLE))
    try:
        plugins = _plugins()
        assert plugins["stcrank.losses"]["focal"]["distribution"] == "stcrank-example"
        assert plugins["stcrank.rerankers"]["ratio"]["class"] == "stcrank_example.ratio:RatioReranker"
        _run(
            sys.executable, "-m", "stcrank", "fit", "-c", str(EXPERIMENT), f"--data.root={recflow_store}",
            "--model.loss=focal", "--trainer.fast_dev_run=true", f"--trainer.default_root_dir={tmp_path}",
        )  # fmt: skip
        _run(sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(EXAMPLE / "tests"))
    finally:
        _run(*pip, "uninstall", "--yes", "stcrank-example")
    assert "focal" not in _plugins()["stcrank.losses"]
