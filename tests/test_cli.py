import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from stcrank.cli import console_main, main
from stcrank.errors import UsageError

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENT = ROOT / "configs/experiments/recflow/rank/din_baseline.yaml"


def _one_line_error(capsys, argv, code):
    """Run the console entry point; return its only stderr line, after checking the exit status."""
    with pytest.raises(SystemExit) as exit_info:
        console_main(argv)
    assert exit_info.value.code == code
    err = capsys.readouterr().err
    assert "Traceback" not in err and "usage:" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_overview_lists_every_command(capsys):
    main([])
    out = capsys.readouterr().out
    for command in ("fit", "validate", "test", "predict", "plugins", "data", "tune", "simulate", "report", "export"):
        assert f"  {command} " in out


def test_unknown_command_suggests_the_closest(capsys):
    with pytest.raises(UsageError, match="unknown command 'fitt'; did you mean fit"):
        main(["fitt"])
    line = _one_line_error(capsys, ["tset"], 2)
    assert line.startswith("stcrank: error: unknown command 'tset'; did you mean test?")


def test_data_lists_its_subcommands(capsys):
    main(["data"])
    out = capsys.readouterr().out
    assert "synth-recflow" in out and "import-recflow" in out


def test_data_rejects_an_unknown_subcommand(capsys):
    with pytest.raises(UsageError, match="unknown sub-command 'synth'"):
        main(["data", "synth"])
    line = _one_line_error(capsys, ["data", "import-recflw"], 2)
    assert "did you mean import-recflow?" in line


def test_wrong_data_root_is_one_line(capsys, tmp_path):
    line = _one_line_error(capsys, ["fit", "-c", str(EXPERIMENT), f"--data.root={tmp_path / 'nowhere'}"], 1)
    assert line.startswith("stcrank fit: error: ") and "nowhere/manifest.json: not found" in line
    assert "stcrank data import-recflow" in line


def test_unknown_plugin_name_is_one_line_with_a_suggestion(capsys, recflow_store):
    argv = ["fit", "-c", str(EXPERIMENT), f"--data.root={recflow_store}", "--model.loss", "fs_ltrr"]
    line = _one_line_error(capsys, argv, 2)
    assert line.startswith("stcrank fit: error: --model.loss fs_ltrr: unknown plugin in group stcrank.losses")
    assert "did you mean fs_ltr?" in line


def test_missing_checkpoint_is_one_line(capsys, recflow_store, tmp_path):
    common = [
        "test",
        "-c",
        str(EXPERIMENT),
        f"--data.root={recflow_store}",
        f"--trainer.logger.init_args.save_dir={tmp_path}",
    ]
    line = _one_line_error(capsys, [*common, "--ckpt_path", "last.ckpt"], 2)
    assert line.startswith("stcrank test: error: --ckpt_path last.ckpt: no such file")
    expected = tmp_path / "recflow/rank/din_baseline/checkpoints"
    assert f"{expected}/last.ckpt" in line
    line = _one_line_error(capsys, [*common, "--ckpt_path", "last"], 2)
    assert line.startswith(f"stcrank test: error: --ckpt_path last: no last.ckpt in {expected}")


def test_missing_day_of_a_release_is_one_line(capsys, recflow_store, tmp_path):
    release = tmp_path / "release"
    shutil.copytree(recflow_store.parent / "release", release)
    day = sorted((release / "realshow").glob("*.feather"))[1]
    day.unlink()
    line = _one_line_error(capsys, ["data", "import-recflow", "--src", str(release), "--dst", str(tmp_path / "s")], 1)
    assert line.startswith("stcrank data import-recflow: error: ")
    assert f"day {day.stem} cannot be imported (missing realshow/{day.name})" in line
    assert line.endswith("pass --on_missing_day skip to leave it out")


def test_missing_day_of_a_store_is_one_line(capsys, recflow_store):
    argv = ["fit", "-c", str(EXPERIMENT), f"--data.root={recflow_store}", "--data.test_day", "2023-12-31"]
    line = _one_line_error(capsys, argv, 2)
    assert line.startswith("stcrank fit: error: --data.test_day 2023-12-31: no such day in the store")


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo unpickled",))


def test_refused_pickle_is_one_line(capsys, recflow_store, tmp_path):
    release = tmp_path / "release"
    shutil.copytree(recflow_store.parent / "release", release)
    (release / "others" / "id_cnt.pkl").write_bytes(pickle.dumps({"user_id": _RunsCode()}))
    line = _one_line_error(capsys, ["data", "import-recflow", "--src", str(release), "--dst", str(tmp_path / "s")], 1)
    assert line.startswith("stcrank data import-recflow: error: ")
    assert "id_cnt.pkl: refused to unpickle" in line and "system" in line and "nothing of it was run" in line


def test_config_key_typo_names_the_file_and_the_fix(capsys, recflow_store, tmp_path):
    typo = tmp_path / "typo.yaml"
    typo.write_text("data:\n  init_args:\n    batch_sise: 64\n")
    argv = ["fit", "-c", str(EXPERIMENT), f"--data.root={recflow_store}", "-c", str(typo)]
    line = _one_line_error(capsys, argv, 2)
    assert line == (
        "stcrank fit: error: --data.batch_sise: RecFlowDataModule has no option 'batch_sise'; did you mean "
        f"--data.batch_size? (in {typo} line 3)"
    )


@pytest.mark.parametrize(
    ("option", "expected"),
    [
        (["--trainer.max_epochz", "1"], "unknown option --trainer.max_epochz; did you mean --trainer.max_epochs?"),
        (["--modle.lr", "1"], "unknown option --modle.lr; did you mean --model.lr?"),
        (["--data.batch_size", "ten"], "--data.batch_size: expected int, got ten"),
        (["--model", "RankingTsk"], "--model RankingTsk: no such class; did you mean RankingTask?"),
        (["--model.network.embeding_dim", "4"], "did you mean --model.network.embedding_dim?"),
    ],
)
def test_command_line_typos_are_one_line(capsys, recflow_store, option, expected):
    line = _one_line_error(capsys, ["fit", "-c", str(EXPERIMENT), f"--data.root={recflow_store}", *option], 2)
    assert line.startswith("stcrank fit: error: ") and expected in line, line


def test_a_top_level_typo_in_a_file_is_located(capsys, recflow_store, tmp_path):
    typo = tmp_path / "typo.yaml"
    typo.write_text("trainr:\n  max_epochs: 2\n")
    argv = ["fit", "-c", str(EXPERIMENT), f"--data.root={recflow_store}", "-c", str(typo)]
    line = _one_line_error(capsys, argv, 2)
    assert "did you mean --trainer.max_epochs?" in line and f"(in {typo} line 2)" in line


def test_debug_shows_the_traceback(recflow_store, tmp_path, monkeypatch):
    argv = ["fit", "-c", str(EXPERIMENT), f"--data.root={tmp_path / 'nowhere'}"]
    with pytest.raises(ValueError, match=r"manifest\.json: not found"):
        console_main([*argv, "--debug"])
    monkeypatch.setenv("STCRANK_DEBUG", "1")
    with pytest.raises(ValueError, match=r"manifest\.json: not found"):
        console_main(argv)


def test_a_bug_keeps_its_traceback(monkeypatch):
    def broken(argv):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr("stcrank.commands.plugins.main", broken)
    with pytest.raises(ZeroDivisionError):
        console_main(["plugins"])


def test_the_console_script_prints_one_line_and_exits_2(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "stcrank", "fit", "-c", str(tmp_path / "missing.yaml")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"stcrank fit: error: --config: File does not exist: '{tmp_path / 'missing.yaml'}'"
    ]


def test_console_sets_a_passive_openmp_wait_policy_unless_one_is_set(monkeypatch):
    import stcrank.cli as cli

    monkeypatch.setattr(cli, "main", lambda argv: None)
    monkeypatch.setenv("OMP_WAIT_POLICY", "placeholder")  # recorded, so that teardown restores the environment
    monkeypatch.delenv("OMP_WAIT_POLICY")
    cli.console_main([])
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    cli.console_main([])
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
