import json
import logging
import math
import os
from pathlib import Path

import pytest

from stcrank.reports.runner import (
    ExperimentRunner,
    ResultCache,
    RunResult,
    RunSpec,
    config_digest,
    data_fingerprint,
    data_init_parameters,
    last_checkpoint,
    run_all,
    run_key,
)

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
DIN_BASELINE = CONFIGS / "experiments" / "recflow" / "rank" / "din_baseline.yaml"


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _store(tmp_path: Path, name: str = "store", **manifest) -> Path:
    root = tmp_path / name
    _write(root / "manifest.json", json.dumps({"days": ["d1", "d2"], **manifest}))
    _write(root / "days" / "d1.parquet", "x" * 10)
    return root


def test_config_digest_follows_referenced_pieces(tmp_path):
    piece = _write(tmp_path / "model" / "m.yaml", "lr: 0.1\n")
    experiment = _write(tmp_path / "exp" / "e.yaml", "model: ../model/m.yaml\nseed_everything: 1\n")
    _write(tmp_path / "model" / "unrelated.yaml", "a: 1\n")
    before = config_digest(experiment)
    _write(tmp_path / "model" / "unrelated.yaml", "a: 2\n")
    assert config_digest(experiment) == before
    piece.write_text("lr: 0.2\n")
    assert config_digest(experiment) != before
    with pytest.raises(FileNotFoundError, match="experiment config not found"):
        config_digest(tmp_path / "nope.yaml")


def test_config_digest_of_a_real_experiment_covers_its_pieces():
    assert len(config_digest(DIN_BASELINE)) == 64


def test_data_fingerprint_ignores_where_and_how_fast_a_store_was_written(tmp_path):
    first = _store(tmp_path, "a", source="/somewhere", seconds=1.0, rows={"d1": {"n": 5, "phase_seconds": {"x": 1}}})
    second = _store(tmp_path, "b", source="/elsewhere", seconds=9.0, rows={"d1": {"n": 5, "phase_seconds": {"x": 2}}})
    assert data_fingerprint(first) == data_fingerprint(second)
    _write(second / "days" / "d1.parquet", "x" * 11)
    assert data_fingerprint(first) != data_fingerprint(second)
    third = _store(tmp_path, "c", rows={"d1": {"n": 6, "phase_seconds": {"x": 1}}})
    assert data_fingerprint(third) != data_fingerprint(_store(tmp_path, "d", rows={"d1": {"n": 5}}))
    with pytest.raises(FileNotFoundError, match="data directory not found"):
        data_fingerprint(tmp_path / "missing")


def test_run_key_depends_on_every_input(tmp_path):
    config = _write(tmp_path / "e.yaml", "a: 1\n")
    spec = RunSpec(config, 0, tmp_path)
    keys = {
        run_key(spec, "data1"),
        run_key(RunSpec(config, 1, tmp_path), "data1"),
        run_key(RunSpec(config, 0, tmp_path, ("--x=1",)), "data1"),
        run_key(spec, "data2"),
    }
    assert len(keys) == 4
    assert run_key(spec, "data1") == run_key(RunSpec(config, 0, tmp_path / "moved"), "data1")


def test_data_init_parameters_reads_the_data_piece(tmp_path):
    params = data_init_parameters(DIN_BASELINE)
    assert {"root", "seed", "batch_size"} <= params
    inline = _write(
        tmp_path / "inline.yaml", "data:\n  class_path: stcrank.data.recflow.datamodule.RecFlowDataModule\n"
    )
    assert "seed" in data_init_parameters(inline)
    assert data_init_parameters(_write(tmp_path / "none.yaml", "model: {}\n")) is None
    assert data_init_parameters(_write(tmp_path / "bad.yaml", "data:\n  class_path: no.such.Module\n")) is None


def test_last_checkpoint_takes_the_newest(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no checkpoints/last\.ckpt"):
        last_checkpoint(tmp_path)
    for index, name in enumerate(("recflow/rank/b", "recflow/rank/a")):
        path = _write(tmp_path / name / "checkpoints" / "last.ckpt", "")
        os.utime(path, ns=(index * 10**9, index * 10**9))
    assert last_checkpoint(tmp_path) == tmp_path / "recflow/rank/a/checkpoints/last.ckpt"


def test_result_cache_round_trip_last_record_wins_and_truncation_is_skipped(tmp_path, caplog):
    path = tmp_path / "out" / "results.jsonl"
    cache = ResultCache(path)
    cache.add(RunResult("k1", "c.yaml", 0, "d", "failed", error="boom"))
    cache.add(RunResult("k1", "c.yaml", 0, "d", "ok", {"auc": 0.7, "gauc": math.nan}, seconds={"fit": 1.0}))
    cache.add(RunResult("k2", "c.yaml", 1, "d", "ok", {"auc": 0.8}))
    with path.open("a") as stream:
        stream.write('{"key": "k3", "config": "c.ya')  # a report killed mid-line
    with caplog.at_level(logging.WARNING):
        reloaded = ResultCache(path)
    assert "skipping an unreadable result" in caplog.text
    assert set(reloaded.results) == {"k1", "k2"}
    first = reloaded.get("k1")
    assert first.status == "ok" and first.metrics["auc"] == 0.7 and math.isnan(first.metrics["gauc"])
    assert "NaN" not in path.read_text()  # strict JSON: NaN is written as null


class FakeRunner:
    def __init__(self, fail=()):
        self.calls = []
        self.fail = set(fail)

    def __call__(self, spec, key):
        self.calls.append((spec.config.name, spec.seed))
        if spec.config.name in self.fail:
            raise RuntimeError(f"{spec.config.name} is broken")
        return {"auc": 0.5 + 0.01 * spec.seed}, {"fit": 0.1, "test": 0.1}


def test_run_all_caches_resumes_and_records_failures(tmp_path):
    good, bad = _write(tmp_path / "good.yaml", "a: 1\n"), _write(tmp_path / "bad.yaml", "a: 2\n")
    specs = [RunSpec(config, seed, tmp_path) for seed in (0, 1) for config in (good, bad)]
    cache = ResultCache(tmp_path / "results.jsonl")
    runner, lines = FakeRunner(fail={"bad.yaml"}), []
    results = run_all(specs, runner, cache, "fp", progress=lines.append)
    assert [r.status for r in results] == ["ok", "failed", "ok", "failed"]
    assert results[2].metrics == {"auc": 0.51} and results[1].error == "bad.yaml is broken"
    assert len(lines) == 4 and "FAILED: bad.yaml is broken" in lines[1]
    # A second report reads the successes from disk and retries only the failures...
    runner = FakeRunner()
    again = run_all(specs, runner, ResultCache(tmp_path / "results.jsonl"), "fp")
    assert runner.calls == [("bad.yaml", 0), ("bad.yaml", 1)]
    assert all(r.status == "ok" for r in again)
    # ...and with everything cached, runs nothing.
    runner = FakeRunner()
    run_all(specs, runner, ResultCache(tmp_path / "results.jsonl"), "fp")
    assert runner.calls == []


def test_run_all_can_keep_cached_failures(tmp_path):
    bad = _write(tmp_path / "bad.yaml", "a: 2\n")
    cache = ResultCache(tmp_path / "results.jsonl")
    run_all([RunSpec(bad, 0, tmp_path)], FakeRunner(fail={"bad.yaml"}), cache, "fp")
    runner = FakeRunner()
    results = run_all([RunSpec(bad, 0, tmp_path)], runner, cache, "fp", retry_failed=False)
    assert runner.calls == [] and results[0].status == "failed"


def test_runner_command_passes_seed_store_and_output_directory(tmp_path):
    runner = ExperimentRunner(tmp_path)
    spec = RunSpec(DIN_BASELINE, 3, tmp_path / "store", ("--data.init_args.batch_size=128",))
    command = runner.command(spec, tmp_path / "run")
    assert command[:2] == ["-c", str(DIN_BASELINE)]
    assert f"--data.root={tmp_path / 'store'}" in command
    assert f"--trainer.logger.init_args.save_dir={tmp_path / 'run'}" in command
    assert "--seed_everything=3" in command and "--data.init_args.seed=3" in command
    assert command[-1] == "--data.init_args.batch_size=128"
    assert "--data.init_args.seed=3" not in ExperimentRunner(tmp_path, seed_data=False).command(spec, tmp_path)


def test_runner_reports_a_rejected_config_in_one_line(tmp_path, recflow_store):
    config = _write(
        tmp_path / "broken.yaml",
        f"model: {CONFIGS / 'model' / 'din.yaml'}\ndata: {CONFIGS / 'data' / 'recflow_rank.yaml'}\n"
        f"trainer: {CONFIGS / 'trainer' / 'default.yaml'}\nno_such_option: 1\n",
    )
    runner = ExperimentRunner(tmp_path / "runs")
    with pytest.raises(RuntimeError, match="command line rejected the config") as error:
        runner(RunSpec(config, 0, recflow_store), "key")
    assert "no_such_option" in str(error.value)
    (log,) = (tmp_path / "runs").glob("*/key/run.log")  # the console output is kept
    assert "no_such_option" in log.read_text()
