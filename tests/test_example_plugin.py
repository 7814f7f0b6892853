"""Round trip of the third-party example package: build it, list it, train with its loss, run its own tests.

The package is installed into a throw-away ``--target`` directory that only the subprocesses see (through
``PYTHONPATH``), so the environment running the tests is never modified, and the test passes whether or not the
user has installed the example themselves (``pip install ./plugins/example``, as the docs suggest).
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "plugins" / "example"
EXPERIMENT = ROOT / "configs/experiments/recflow/rank/din_baseline.yaml"


def _run(*command: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, f"{command} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    return result


def _plugins(env: dict[str, str] | None = None) -> dict:
    return json.loads(_run(sys.executable, "-m", "stcrank", "plugins", "--json", env=env).stdout)


def _with_path(directory: Path) -> dict[str, str]:
    """The current environment with ``directory`` first on ``PYTHONPATH`` (ahead of any installed copy)."""
    paths = [str(directory), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


@pytest.mark.slow
def test_example_package_round_trip(recflow_store, tmp_path):
    before = _plugins()
    # Build from a copy, so the build leaves nothing (build/, *.egg-info) in the repository either.
    source = shutil.copytree(EXAMPLE, tmp_path / "source", ignore=shutil.ignore_patterns("build", "*.egg-info"))
    site = tmp_path / "site"
    pip = (sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation")
    _run(*pip, "--target", str(site), str(source))
    env = _with_path(site)

    plugins = _plugins(env)
    assert plugins["stcrank.losses"]["focal"]["distribution"] == "stcrank-example"
    assert plugins["stcrank.rerankers"]["ratio"]["class"] == "stcrank_example.ratio:RatioReranker"
    where = _run(sys.executable, "-c", "import stcrank_example; print(stcrank_example.__file__)", env=env)
    assert Path(where.stdout.strip()).is_relative_to(site), "the example was imported from another copy"
    _run(
        sys.executable, "-m", "stcrank", "fit", "-c", str(EXPERIMENT), f"--data.root={recflow_store}",
        "--model.loss=focal", "--trainer.fast_dev_run=true", f"--trainer.default_root_dir={tmp_path}",
        env=env,
    )  # fmt: skip
    _run(sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(EXAMPLE / "tests"), env=env)

    assert _plugins() == before, "the test environment's plugins changed"
