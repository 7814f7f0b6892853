import os

import pytest

from stcrank.cli import main


def test_overview_lists_every_command(capsys):
    main([])
    out = capsys.readouterr().out
    for command in ("fit", "validate", "test", "predict", "plugins", "data", "tune", "simulate", "report", "export"):
        assert f"  {command} " in out


def test_unknown_command_fails_with_its_name():
    with pytest.raises(SystemExit, match="unknown command 'fitt'"):
        main(["fitt"])


def test_data_lists_its_subcommands(capsys):
    main(["data"])
    out = capsys.readouterr().out
    assert "synth-recflow" in out and "import-recflow" in out


def test_data_rejects_an_unknown_subcommand():
    with pytest.raises(SystemExit, match="unknown sub-command 'synth'"):
        main(["data", "synth"])


def test_console_sets_a_passive_openmp_wait_policy_unless_one_is_set(monkeypatch):
    import stcrank.cli as cli

    monkeypatch.setattr(cli, "main", lambda: None)
    monkeypatch.setenv("OMP_WAIT_POLICY", "placeholder")  # recorded, so that teardown restores the environment
    monkeypatch.delenv("OMP_WAIT_POLICY")
    cli.console_main()
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    cli.console_main()
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
