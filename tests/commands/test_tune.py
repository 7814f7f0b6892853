import errno
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from stcrank.cli import console_main, main
from stcrank.commands.tune import main as tune_main
from stcrank.commands.tune import tune
from stcrank.io import OutputError
from stcrank.tuning.predictions import synthetic_predictions
from stcrank.tuning.study import open_storage

# A custom objective, as a user (or the simulator) would plug one in by class path. It announces every evaluation
# on stderr, can sleep, and can wait in setup until `parties` processes have started.
CONTROLLED_OBJECTIVE = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from stcrank.tuning.objectives import SumAucObjective

    class ControlledSumAuc(SumAucObjective):
        def __init__(self, folder: str = ".", parties: int = 1, delay: float = 0.0) -> None:
            self.folder, self.parties, self.delay = folder, parties, delay

        def setup(self, context):
            super().setup(context)
            Path(self.folder, f"ready-{os.getpid()}").touch()
            deadline = time.monotonic() + 120
            while len(list(Path(self.folder).glob("ready-*"))) < self.parties and time.monotonic() < deadline:
                time.sleep(0.02)

        def evaluate(self, weights):
            print("evaluating", file=sys.stderr, flush=True)
            time.sleep(self.delay)
            return super().evaluate(weights)
    """
)


@pytest.fixture(scope="module")
def predictions(tmp_path_factory):
    return str(synthetic_predictions(tmp_path_factory.mktemp("tune") / "val.parquet", rows=3000, seed=5))


@pytest.fixture
def objective_module(tmp_path, monkeypatch):
    (tmp_path / "controlled_objective.py").write_text(CONTROLLED_OBJECTIVE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def _env(folder):
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(folder), os.environ.get("PYTHONPATH", "")])}


def _command(predictions, *options):
    return [sys.executable, "-m", "stcrank.commands.tune", "--predictions", predictions, *options]


def _complete(storage, name):
    study = optuna.load_study(study_name=name, storage=open_storage(storage))
    return {t.number: (t.params, t.values) for t in study.get_trials(states=(TrialState.COMPLETE,))}, study


def test_json_output_and_files(predictions, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["tune", "--predictions", predictions, "--tasks", "[vtr,cvr,sdr]", "--n-trials", "12", "--seed", "0"]
    assert main([*argv, "--out", str(out), "--format", "json"]) is None  # a console script exits 0 on None
    printed = json.loads(capsys.readouterr().out)
    assert (
        printed["finished_trials"] == 12 and printed["ran"] == 12 and printed["objectives"] == {"sum_auc": "maximize"}
    )
    weights = printed["chosen"]["weights"]
    assert weights["vtr"] == 1.0 and set(weights) == {"vtr", "cvr", "sdr"}
    assert yaml.safe_load(printed["yaml"])["ensemble"]["init_args"]["weights"] == weights
    assert printed["ensemble"]["class_path"] == "stcrank_plugins.ensembles.linear.LinearEnsemble"
    assert sorted(path.name for path in out.iterdir()) == [
        "ensemble.yaml",
        "optimization_history.png",
        "result.json",
        "table.md",
    ]
    assert yaml.safe_load((out / "ensemble.yaml").read_text())["ensemble"]["init_args"]["weights"] == weights
    assert json.loads((out / "result.json").read_text())["chosen"] == printed["chosen"]
    assert (out / "table.md").read_text().startswith("| trial | w_vtr | w_cvr | w_sdr | sum_auc |")


def test_table_output_of_a_multi_objective_study(predictions, tmp_path, capsys):
    out = tmp_path / "out"
    tune_main(["--predictions", predictions, "--objective", "multi_auc", "--n_trials", "15", "--out", str(out)])
    text = capsys.readouterr().out
    assert "objectives auc_vtr (maximize), auc_cvr (maximize), auc_sdr (maximize)" in text
    assert "Pareto front (* = chosen):" in text and "| trial | w_vtr | w_cvr | w_sdr | auc_vtr | auc_cvr |" in text
    snippet = text.split("# ensemble weights for a config:\n")[1].split("\n\nwrote:")[0]
    assert yaml.safe_load(snippet)["ensemble"]["init_args"]["weights"]["vtr"] == 1.0
    assert (out / "pareto_front.png").stat().st_size > 1000


def test_multiplicative_ensemble_with_fixed_task_and_bounds(predictions, capsys):
    options = ["--ensemble", "multiplicative", "--tasks", "[cvr,vtr]", "--fixed-task", "vtr", "--bounds", "[0.1,10]"]
    tune_main(["--predictions", predictions, *options, "--n-trials", "6", "--format", "json"])
    result = json.loads(capsys.readouterr().out)
    for record in result["trials"]:
        assert record["weights"]["vtr"] == 1.0 and 0.1 <= record["weights"]["cvr"] <= 10
    assert result["ensemble"]["class_path"].endswith("MultiplicativeEnsemble")


def test_custom_objective_by_class_path(predictions, objective_module, capsys):
    objective = ["--objective", "controlled_objective.ControlledSumAuc", "--objective.folder", str(objective_module)]
    tune_main(["--predictions", predictions, *objective, "--n-trials", "3", "--format", "json"])
    captured = capsys.readouterr()
    assert json.loads(captured.out)["finished_trials"] == 3 and captured.err.count("evaluating") == 3


def test_tune_function_returns_what_json_prints(predictions, capsys):
    result = tune(predictions=predictions, n_trials=3, format="json")
    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(result))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--predictions", "missing.parquet"], "missing.parquet: file not found"),
        (["--n-trials", "5"], "give --tasks, or --predictions"),
        (["--tasks", "[vtr,cvr]"], r"objective SumAucObjective needs cached predictions \(--predictions FILE\)"),
        (["--tasks", "[cvr]", "--predictions", "PRED"], "at least two distinct tasks"),
        (["--ensemble", "nope", "--predictions", "PRED"], "unknown plugin 'nope' in group 'stcrank.ensembles'"),
        (["--objective", "best", "--predictions", "PRED"], "unknown objective 'best'"),
        (["--n-trials", "0", "--predictions", "PRED"], "at least 1"),
    ],
)
def test_errors_are_one_clear_line(predictions, options, message, capsys):
    options = [predictions if option == "PRED" else option for option in options]
    with pytest.raises(SystemExit) as exit_info:
        console_main(["tune", *options])
    assert exit_info.value.code in (1, 2)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and re.match("stcrank tune: error: .*" + message.replace("[", r"\["), lines[0]), lines


def test_help_describes_the_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        tune_main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "--n_trials" in text and "--storage" in text and "resumed study runs only the remainder" in text


@pytest.mark.slow
def test_a_killed_study_resumes_from_its_journal(predictions, objective_module):
    storage, name = str(objective_module / "study.log"), "moc"
    objective = ["--objective", "controlled_objective.ControlledSumAuc", "--objective.folder", str(objective_module)]
    common = ["--storage", storage, "--study-name", name, "--n-trials", "12", "--format", "json", *objective]
    process = subprocess.Popen(
        _command(predictions, *common, "--objective.delay", "0.5"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(objective_module),
    )
    watchdog = threading.Timer(180, process.kill)
    watchdog.start()
    started = 0
    for line in process.stderr:
        started += line.strip() == "evaluating"
        if started == 6:  # trials 0-4 finished, trial 5 is sleeping in evaluate (no storage lock held)
            process.send_signal(signal.SIGKILL)
            break
    process.wait()
    watchdog.cancel()
    assert process.returncode == -signal.SIGKILL
    before, study = _complete(storage, name)
    assert sorted(before) == [0, 1, 2, 3, 4]
    assert [t.number for t in study.get_trials(states=(TrialState.RUNNING,))] == [5]  # the killed trial

    resumed = subprocess.run(
        _command(predictions, *common), capture_output=True, text=True, env=_env(objective_module), timeout=180
    )
    assert resumed.returncode == 0, resumed.stderr
    result = json.loads(resumed.stdout)
    after, _ = _complete(storage, name)
    assert result["finished_trials"] == 12 and result["ran"] == 7 and len(after) == 12
    assert all(after[number] == before[number] for number in before)


@pytest.mark.slow
def test_two_command_line_workers_share_one_study(predictions, objective_module):
    storage = str(objective_module / "shared.log")
    objective = ["--objective", "controlled_objective.ControlledSumAuc", "--objective.folder", str(objective_module)]
    options = [*objective, "--objective.parties", "2", "--objective.delay", "0.05"]
    command = _command(predictions, "--storage", storage, "--study-name", "w", "--n-trials", "16", "--format", "json")
    processes = [
        subprocess.Popen(
            [*command, "--seed", str(seed), *options],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(objective_module),
        )
        for seed in (0, 1)
    ]
    outputs = [process.communicate(timeout=180) for process in processes]
    assert [process.returncode for process in processes] == [0, 0], [err for _, err in outputs]
    ran = [json.loads(out)["ran"] for out, _ in outputs]
    finished, _ = _complete(storage, "w")
    assert all(count > 0 for count in ran) and sum(ran) == len(finished) and 16 <= len(finished) <= 17


def _disk_fills_after(monkeypatch, writes: int) -> None:
    """Make every ``os.fsync`` after the first ``writes`` fail as on a full disk (the bytes never got stored)."""
    real, calls = os.fsync, []

    def fsync(descriptor):
        calls.append(descriptor)
        if len(calls) > writes:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(descriptor)

    monkeypatch.setattr(os, "fsync", fsync)


def test_a_full_disk_names_the_journal_and_a_rerun_resumes(predictions, tmp_path, monkeypatch):
    storage = tmp_path / "study.log"
    argv = ["tune", "--predictions", predictions, "--tasks", "[vtr,cvr,sdr]", "--n-trials", "15"]
    argv += ["--storage", str(storage), "--format", "json"]
    _disk_fills_after(monkeypatch, 40)  # in the middle of the trials
    with pytest.raises(OutputError) as error:
        main(argv)
    message = str(error.value)
    assert f"cannot write the tuning journal {storage}: no space left on the device" in message, message
    assert "run the same command again" in message
    monkeypatch.undo()
    assert storage.read_bytes().endswith(b"\n")  # no torn record left behind
    main(argv)  # after freeing space, the same command resumes the study
    complete, _ = _complete(str(storage), "stcrank-tune")
    assert len(complete) == 15


def test_a_full_disk_at_the_first_write_names_the_journal(predictions, tmp_path, monkeypatch):
    _disk_fills_after(monkeypatch, 0)
    storage = tmp_path / "study.log"
    with pytest.raises(OutputError, match=r"cannot write the tuning journal .*study\.log: no space left"):
        main(["tune", "--predictions", predictions, "--n-trials", "3", "--storage", str(storage)])


def test_a_full_disk_for_the_outputs_names_the_file_and_leaves_none_half_written(predictions, tmp_path, monkeypatch):
    real_write_text = Path.write_text

    def write_text(self, data, *args, **kwargs):
        if self.suffix == ".json":
            real_write_text(self, data[:10], *args, **kwargs)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write_text(self, data, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", write_text)
    out = tmp_path / "out"
    with pytest.raises(OutputError, match=r"cannot write the tuning result .*result\.json: no space left"):
        main(["tune", "--predictions", predictions, "--n-trials", "3", "--out", str(out)])
    assert not list(out.glob("*.json")) and not list(out.glob(".*"))
