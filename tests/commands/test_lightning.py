import csv
from pathlib import Path

import pytest

from stcrank.cli import main
from stcrank.commands.lightning import experiment_name, planned_checkpoint_folder
from stcrank.errors import ConfigError

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
