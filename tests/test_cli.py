import pytest

from stcrank.cli import main


def test_overview_lists_every_command(capsys):
    main([])
    out = capsys.readouterr().out
    for command in ("fit", "validate", "test", "predict", "plugins", "data", "tune", "simulate", "report"):
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
