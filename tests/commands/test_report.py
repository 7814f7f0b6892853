import sys

import pytest

from stcrank.cli import main
from stcrank.commands import report
from stcrank.errors import UsageError
from stcrank.io import OutputError


def test_report_lists_its_reports(capsys):
    main(["report"])
    out = capsys.readouterr().out
    assert "recflow" in out and "stcrank" in out


def test_unknown_report_is_named():
    with pytest.raises(UsageError, match="unknown report 'recflwo'; did you mean recflow"):
        main(["report", "recflwo"])


def test_recflow_help_lists_its_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["report", "recflow", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for option in ("--quick", "--tables", "--rows", "--seeds", "--data", "--out", "--run"):
        assert option in out


def test_recflow_dispatches_with_its_options(tmp_path, recflow_store):
    experiment = tmp_path / "exp.yaml"
    experiment.write_text("# not run here\n")
    config = tmp_path / "report.yaml"
    config.write_text(
        f"tables:\n  table13:\n    title: T\n    metrics: [auc]\n    baseline: Baseline\n"
        f"    rows:\n      Baseline: {experiment}\n      Other: {tmp_path / 'missing.yaml'}\n"
    )
    argv = ["report", "recflow", f"--report_config={config}", f"--data={recflow_store}", f"--out={tmp_path / 'out'}"]
    summary = main([*argv, "--seeds=2", "--run", "false", "--quick"])
    assert summary["missing_configs"] == [str(tmp_path / "missing.yaml")]
    text = (tmp_path / "out" / "report.md").read_text()
    assert "| Baseline | not run yet |" in text and "| Other | not run: config missing |" in text
    with pytest.raises(ValueError, match="unknown tables"):
        main([*argv, "--run=false", "--tables=table99"])


def test_a_missing_report_module_gives_a_clear_error(monkeypatch):
    monkeypatch.setitem(report.REPORTS, "stcrank", ("stcrank.reports.no_such_report:report_stcrank", "x"))
    with pytest.raises(SystemExit, match=r"stcrank report stcrank: not available: module stcrank\.reports\.no_such"):
        main(["report", "stcrank"])


def test_a_missing_report_function_gives_a_clear_error(monkeypatch):
    monkeypatch.setitem(report.REPORTS, "stcrank", ("stcrank.reports.stats:report_stcrank", "x"))
    with pytest.raises(SystemExit, match=r"stcrank\.reports\.stats has no function report_stcrank"):
        main(["report", "stcrank"])


def test_a_broken_import_inside_a_report_is_not_hidden(monkeypatch, tmp_path):
    (tmp_path / "broken_report_module.py").write_text("import no_such_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(report.REPORTS, "stcrank", ("broken_report_module:report_stcrank", "x"))
    with pytest.raises(ModuleNotFoundError, match="no_such_dependency_xyz"):
        main(["report", "stcrank"])
    sys.modules.pop("broken_report_module", None)


def test_boolean_options_may_stand_alone():
    def fake(*, quick: bool = False, run: bool = True, seeds: int = 1) -> None:
        """Fake."""

    assert report._bare_flags(fake, ["recflow", "--quick", "--seeds", "2", "--run", "false"]) == [
        "recflow",
        "--quick=true",
        "--seeds",
        "2",
        "--run",
        "false",
    ]
    assert report._bare_flags(fake, ["recflow", "--run"]) == ["recflow", "--run=true"]


@pytest.mark.parametrize("given", [["--out", "elsewhere"], ["--out=elsewhere"], []], ids=["out", "out=", "default"])
def test_a_full_disk_names_the_report_folder(monkeypatch, tmp_path, given):
    (tmp_path / "full_disk_report.py").write_text(
        "import errno, os\n\n"
        "def report_stcrank(*, out: str = 'runs/reports/x') -> None:\n"
        '    """Fake report that fills the disk."""\n'
        "    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(report.REPORTS, "stcrank", ("full_disk_report:report_stcrank", "x"))
    folder = "elsewhere" if given else "runs/reports/x"
    with pytest.raises(OutputError, match=f"cannot write under {folder}: no space left on the device"):
        main(["report", "stcrank", *given])
    sys.modules.pop("full_disk_report", None)
