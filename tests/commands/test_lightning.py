import csv
import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from stcrank.cli import console_main, main
from stcrank.commands.lightning import StcrankCLI, experiment_name, planned_checkpoint_folder
from stcrank.errors import ConfigError, UsageError
from stcrank.io import OutputError
from stcrank.registry import PluginError

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENT = ROOT / "configs/experiments/recflow/rank/din_baseline.yaml"


def test_experiment_name_is_the_config_path_under_experiments():
    assert experiment_name([EXPERIMENT], None) == "recflow/rank/din_baseline"
    assert experiment_name([Path("mine/exp.yaml"), EXPERIMENT], None) == "exp"
    assert experiment_name(None, "stcrank.tasks.RankingTask") == "RankingTask"


def test_the_checkpoint_folder_is_read_from_the_trainer_settings(tmp_path):
    from jsonargparse import Namespace

    logger = Namespace(class_path="CSVLogger", init_args=Namespace(save_dir=str(tmp_path), name="a/b"))
    assert planned_checkpoint_folder(Namespace(logger=logger)) == tmp_path / "a/b/checkpoints"
    explicit = Namespace(class_path="lightning.pytorch.callbacks.ModelCheckpoint", init_args=Namespace(dirpath="x"))
    assert planned_checkpoint_folder(Namespace(logger=logger, callbacks=[explicit])) == Path("x")


@pytest.fixture(scope="module")
def fitted(recflow_store, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    args = ["-c", str(EXPERIMENT), f"--data.root={recflow_store}", f"--trainer.logger.init_args.save_dir={root}"]
    args += ["--data.batch_size=256", "--trainer.enable_progress_bar=false"]
    cli = main(["fit", *args])
    return {"args": args, "run": root / "recflow/rank/din_baseline", "steps": cli.trainer.global_step}


def test_fit_saves_the_last_checkpoint_where_the_docs_say(fitted):
    assert (fitted["run"] / "checkpoints" / "last.ckpt").is_file()
    assert (fitted["run"] / "version_0" / "config.yaml").is_file()


def test_fit_logs_its_metrics_once_an_epoch_even_when_short(fitted):
    assert 0 < fitted["steps"] < 50  # fewer batches than Lightning's log_every_n_steps
    rows = list(csv.DictReader((fitted["run"] / "version_0" / "metrics.csv").open()))
    epoch_rows = [row for row in rows if row.get("train/loss_epoch")]
    assert len(epoch_rows) == 1
    assert 0.5 < float(epoch_rows[0]["train/auc"]) <= 1 and float(epoch_rows[0]["train/loss_epoch"]) > 0


def test_test_without_weights_is_refused(fitted):
    with pytest.raises(ConfigError, match="stcrank test needs trained weights: pass --ckpt_path last"):
        main(["test", *fitted["args"]])
    with pytest.raises(ConfigError, match="stcrank predict needs trained weights"):
        main(["predict", *fitted["args"]])


def test_ckpt_path_last_without_a_fit_is_refused(recflow_store, tmp_path):
    args = ["-c", str(EXPERIMENT), f"--data.root={recflow_store}", f"--trainer.logger.init_args.save_dir={tmp_path}"]
    with pytest.raises(ConfigError, match=r"--ckpt_path last: no last\.ckpt in .*recflow/rank/din_baseline"):
        main(["test", *args, "--ckpt_path", "last"])


def test_test_of_the_last_checkpoint_prints_each_metric_once_by_set(fitted, capsys):
    capsys.readouterr()
    cli = main(["test", *fitted["args"], "--ckpt_path", "last"])
    assert Path(cli.trainer.ckpt_path) == fitted["run"] / "checkpoints" / "last.ckpt"
    out = capsys.readouterr().out
    assert "DataLoader" not in out and "Test metric" not in out
    table = out[out.index("test results of recflow/rank/din_baseline") :]
    lines = table.splitlines()
    assert "exposures" in lines and any(line.startswith("stage candidates") for line in lines)
    for metric in ("auc", "logloss", "recall", "ndcg", "recflow_recall", "recflow_ndcg"):
        assert sum(line.split()[0] == metric for line in lines if line.startswith("  ")) == 1, metric
    assert f"{cli.trainer.callback_metrics['test/auc']:.4f}" in table


def test_untrained_evaluates_on_purpose(fitted, capsys):
    cli = main(["test", *fitted["args"], "--untrained"])
    assert cli.trainer.ckpt_path is None and "test/auc" in cli.trainer.callback_metrics
    assert "(untrained weights)" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="--untrained and --ckpt_path exclude each other"):
        main(["test", *fitted["args"], "--untrained", "--ckpt_path", "last"])


@pytest.mark.parametrize(("only", "built"), [(None, {"fit", "validate", "test", "predict"}), ("test", {"test"})])
def test_only_the_running_subcommand_is_built(only, built):
    cli = StcrankCLI.__new__(StcrankCLI)  # the parsers are built in __init__: check what it would build
    cli.only_subcommand = only
    assert set(cli.subcommands()) == built


def test_help_of_a_subcommand_lists_its_own_options(capsys):
    with pytest.raises(SystemExit):
        main(["test", "--help"])
    assert "--ckpt_path" in capsys.readouterr().out


def test_a_full_disk_while_checkpointing_names_the_checkpoint_and_removes_it(recflow_store, tmp_path, monkeypatch):
    def move(source, destination):  # as on a full disk: the copy across file systems stops half-way
        Path(destination).write_bytes(Path(source).read_bytes()[:100])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(source), None, str(destination))

    monkeypatch.setattr(shutil, "move", move)
    args = ["fit", "-c", str(EXPERIMENT), f"--data.root={recflow_store}", f"--trainer.default_root_dir={tmp_path}"]
    args += [f"--trainer.logger.init_args.save_dir={tmp_path}", "--trainer.max_steps=1"]
    with pytest.raises(OutputError, match=r"cannot write .*checkpoints.*\.ckpt: no space left on the device"):
        main([*args, "--trainer.enable_progress_bar=false"])
    assert not list(tmp_path.rglob("*.ckpt"))


def test_a_plugin_argument_refuses_a_class_outside_its_group(recflow_store, tmp_path, capsys):
    args = ["fit", "-c", str(EXPERIMENT), f"--data.root={recflow_store}", f"--trainer.default_root_dir={tmp_path}"]
    # jsonargparse re-raises what the task's constructor raised as a ValueError caused by it
    with pytest.raises((PluginError, ValueError), match=r"'torch\.nn\.MSELoss' is not a stcrank\.losses plugin"):
        main([*args, "--model.init_args.loss=torch.nn.MSELoss"])
    # the command line prints the cause, on one line
    with pytest.raises(SystemExit) as exit_info:
        console_main([*args, "--model.init_args.loss=torch.nn.MSELoss"])
    assert exit_info.value.code == 2  # a wrong setting, like any other
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in lines[0], lines
    assert lines[0].startswith(
        "stcrank fit: error: --model.loss torch.nn.MSELoss: 'torch.nn.MSELoss' is not a stcrank.losses plugin"
    )
    # a class_path is checked by the parser against the group's base class
    wrong_class = r"^--model\.loss: .*torch\.nn\.MSELoss does not correspond to a subclass of Loss$"
    with pytest.raises(UsageError, match=wrong_class):
        main([*args, '--model.init_args.loss={"class_path": "torch.nn.MSELoss"}'])


def test_fit_help_imports_nothing_it_does_not_need():
    code = (
        "import sys, contextlib, io; from stcrank.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try: main(['fit', '--help'])\n"
        "    except SystemExit: pass\n"
        "heavy = ('optuna', 'scipy', 'pandas', 'pyarrow.compute', 'pyarrow.dataset', 'stcrank.simulation',\n"
        "         'stcrank.tuning', 'stcrank.reports')\n"
        "print(sorted({m for m in sys.modules for h in heavy if m == h or m.startswith(h + '.')}))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "[]"
