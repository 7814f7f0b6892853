import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from stcrank.cli import main
from stcrank.commands.lightning import StcrankCLI
from stcrank.io import OutputError
from stcrank.registry import PluginError

REPO = Path(__file__).resolve().parents[2]
DIN = REPO / "configs/experiments/recflow/rank/din_baseline.yaml"


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
    args = ["fit", "-c", str(DIN), f"--data.root={recflow_store}", f"--trainer.default_root_dir={tmp_path}"]
    args += [f"--trainer.logger.init_args.save_dir={tmp_path}", "--trainer.max_steps=1"]
    with pytest.raises(OutputError, match=r"cannot write .*checkpoints.*\.ckpt: no space left on the device"):
        main([*args, "--trainer.enable_progress_bar=false"])
    assert not list(tmp_path.rglob("*.ckpt"))


def test_a_plugin_argument_refuses_a_class_outside_its_group(recflow_store, tmp_path, capsys):
    args = ["fit", "-c", str(DIN), f"--data.root={recflow_store}", f"--trainer.default_root_dir={tmp_path}"]
    # jsonargparse re-raises what the task's constructor raised as a ValueError holding its message
    with pytest.raises((PluginError, ValueError), match=r"'torch\.nn\.MSELoss' is not a stcrank\.losses plugin"):
        main([*args, "--model.init_args.loss=torch.nn.MSELoss"])
    with pytest.raises(SystemExit):
        main([*args, '--model.init_args.loss={"class_path": "torch.nn.MSELoss"}'])
    err = capsys.readouterr().err
    assert 'Parser key "loss"' in err and "torch.nn.MSELoss does not correspond to a subclass of Loss" in err


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
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "[]"
