"""The commands of README.md and docs/quickstart.md run as written (only the dataset sizes are made smaller).

The commands are read from the documents' ``bash`` blocks, so a changed document is what gets tested. They run in
a temporary folder holding a copy of ``configs/``, in order, through the console entry point: a command that fails
fails the test with its one-line error.
"""

import re
import shlex
import shutil
from pathlib import Path

import pytest

from stcrank.cli import console_main

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"--users": "60", "--days": "3"}
"""Dataset sizes substituted into the documented commands."""
SKIPPED = ("stcrank report",)
"""Commands left out here: the reports run every table over seeds (tests/reports covers them)."""


def bash_commands(markdown: Path) -> list[str]:
    """The commands of a Markdown file's ``bash`` blocks: continuation lines joined, comments dropped."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", markdown.read_text(), flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip()
            if line and not line.startswith("#"):
                commands.append(" ".join(line.split()))
    return commands


def script_commands(script: Path) -> list[str]:
    """The ``stcrank`` commands of a shell script, continuation lines joined."""
    lines = script.read_text().replace("\\\n", " ").splitlines()
    return [" ".join(line.split()) for line in lines if line.strip().startswith("stcrank ")]


def _small(argv: list[str]) -> list[str]:
    return [SMALL.get(argv[i - 1], word) if i else word for i, word in enumerate(argv)]


def _run_documented(markdown: Path, workdir: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    monkeypatch.chdir(workdir)
    ran = []
    for command in bash_commands(markdown):
        if not command.startswith("stcrank ") or command.startswith(SKIPPED):
            continue
        argv = _small(shlex.split(command)[1:])
        try:
            console_main(argv)
        except SystemExit as error:
            pytest.fail(f"{markdown.name}: `{command}` exited with {error.code}")
        ran.append(argv[0])
    return ran


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    return tmp_path


def test_the_quickstart_script_runs_the_documented_steps():
    documented = bash_commands(ROOT / "docs/quickstart.md")
    scripted = script_commands(ROOT / "scripts/quickstart.sh")
    assert scripted and all(command in documented for command in scripted), scripted
    assert "bash scripts/quickstart.sh" in bash_commands(ROOT / "README.md")


def test_the_documented_test_command_reads_where_fit_writes():
    for markdown in (ROOT / "README.md", ROOT / "docs/quickstart.md"):
        for command in bash_commands(markdown):
            if command.startswith(("stcrank test", "stcrank predict")):
                assert "--ckpt_path last" in command, command


@pytest.mark.slow
def test_the_quickstart_commands_run_as_written(workdir, monkeypatch, capsys):
    ran = _run_documented(ROOT / "docs/quickstart.md", workdir, monkeypatch)
    assert ran.count("fit") == 2 and ran.count("test") == 2 and "predict" in ran
    run = workdir / "runs/recflow/rank/din_baseline"
    assert (run / "checkpoints/last.ckpt").is_file() and (run / "predictions.parquet").is_file()
    assert (workdir / "runs/recflow/rank/fsltr/checkpoints/last.ckpt").is_file()
    out = capsys.readouterr().out
    assert "exposures" in out and "stage candidates" in out and "Test metric" not in out  # not Lightning's table


@pytest.mark.slow
def test_the_readme_commands_run_as_written(workdir, monkeypatch):
    ran = _run_documented(ROOT / "README.md", workdir, monkeypatch)
    assert ran == ["plugins", "data", "data", "data", "fit", "test", "predict"]
    assert (workdir / "runs/recflow/rank/din_baseline/predictions.parquet").is_file()
    assert not (workdir / "release").exists() and not (workdir / "store").exists()
