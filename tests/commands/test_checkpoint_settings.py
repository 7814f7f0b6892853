import re
from pathlib import Path

import pytest

from stcrank.cli import main
from stcrank.commands.checkpoint_settings import checked_hparams
from stcrank.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
DIN = REPO / "configs/experiments/recflow/rank/din_baseline.yaml"
HPARAMS = {
    "_class_path": "stcrank.tasks.RankingTask",
    "_instantiator": "lightning.pytorch.cli.instantiate_module",
    "feature_sizes": {"video_id": 10},
    "ks": [50, 100, 200],
    "lr": 0.01,
    "list_target": "candidate_stage",
}


def test_evaluation_honours_given_settings_and_fills_the_rest_from_the_checkpoint():
    class_path, fill = checked_hparams(HPARAMS, "stcrank.tasks.RankingTask", {"ks": [10]}, "test", "x.ckpt")
    assert class_path == "stcrank.tasks.RankingTask"
    assert fill == {"feature_sizes": {"video_id": 10}, "lr": 0.01, "list_target": "candidate_stage"}


@pytest.mark.parametrize("subcommand", ["validate", "test", "predict"])
def test_every_evaluating_command_keeps_what_the_user_gave(subcommand):
    given = {"ks": [10], "lr": 0.5, "list_target": "candidate_slot"}
    assert set(checked_hparams(HPARAMS, None, given, subcommand, "x.ckpt")[1]) == {"feature_sizes"}


def test_resuming_fit_with_another_setting_names_the_option_and_both_values():
    with pytest.raises(ConfigError, match=r"--model\.init_args\.ks is \[10\] here but \[50, 100, 200\] in the check"):
        checked_hparams(HPARAMS, None, {"ks": [10], "lr": 0.01}, "fit", "x.ckpt")
    assert checked_hparams(HPARAMS, None, {"ks": [50, 100, 200]}, "fit", "x.ckpt")[1]["lr"] == 0.01


def test_linked_feature_sizes_are_never_compared():
    assert checked_hparams(HPARAMS, None, {"feature_sizes": {"video_id": 11}}, "fit", "x.ckpt")


def test_another_task_class_is_refused():
    with pytest.raises(ConfigError, match=r"holds a stcrank.tasks.RankingTask.*--model stcrank.tasks.RetrievalTask"):
        checked_hparams(HPARAMS, "stcrank.tasks.RetrievalTask", {}, "test", "x.ckpt")
    assert checked_hparams(HPARAMS, "RankingTask", {}, "test", "x.ckpt")  # a short class name is the same class


@pytest.fixture(scope="module")
def trained(recflow_store, tmp_path_factory):
    root = tmp_path_factory.mktemp("trained")
    args = ["-c", str(DIN), f"--data.root={recflow_store}", f"--trainer.default_root_dir={root}"]
    args += [
        f"--trainer.logger.init_args.save_dir={root}",
        "--trainer.max_steps=2",
        "--trainer.enable_progress_bar=false",
    ]
    main(["fit", *args])
    return args, root / "recflow/rank/din_baseline/checkpoints/last.ckpt"  # runs/<experiment>/checkpoints


def test_test_honours_ks_given_on_the_command_line(trained):
    args, checkpoint = trained
    cli = main(["test", *args, "--model.init_args.ks=[10, 20]", f"--ckpt_path={checkpoint}"])
    metrics = set(cli.trainer.callback_metrics)
    assert {"test/recall@10", "test/recall@20"} <= metrics and "test/recall@50" not in metrics


def test_test_with_another_network_is_refused(trained):
    args, checkpoint = trained
    with pytest.raises(ConfigError, match="weights do not fit the network"):
        main(["test", *args, "--model.init_args.network.init_args.embedding_dim=4", f"--ckpt_path={checkpoint}"])


def test_resuming_from_last_with_another_setting_is_refused(trained):
    args, checkpoint = trained
    expected = rf"cannot resume from --ckpt_path {re.escape(str(checkpoint))}: --model\.init_args\.lr is 0\.5 here"
    with pytest.raises(ConfigError, match=expected):
        main(["fit", *args, "--model.init_args.lr=0.5", "--ckpt_path=last"])
