import re

import pytest

from stcrank.cli import main
from stcrank.commands.help_format import plain_text

MARKUP = re.compile(r"``|:(?:class|func|meth|mod|attr|doc|ref|py:\w+):`")


@pytest.mark.parametrize(
    ("docstring", "plain"),
    [
        ("Written by ``stcrank data synth-eshop``.", "Written by stcrank data synth-eshop."),
        ("Train a :class:`~stcrank.models.base.RankingNetwork` on it", "Train a RankingNetwork on it"),
        ("See :func:`stcrank.registry.load`.", "See stcrank.registry.load."),
        ("Any :py:class:`~a.B` or :doc:`the guide <cli>`", "Any B or the guide"),
        ("`Lightning <https://lightning.ai>`_ and `x <https://x.org/#a>`__", "Lightning (https://lightning.ai) and x (https://x.org/#a)"),
        ("**Always** and *never*", "Always and never"),
        ("a*b*c and 2 * 3 * 4 and ``x**2``", "a*b*c and 2 * 3 * 4 and x**2"),
        ("The ``:class:`` role", "The :class: role"),
        ("A list::\n\n    - name: a", "A list:\n\n    - name: a"),
        ("type: Literal['focus', 'explore'], default: focus", "type: Literal['focus', 'explore'], default: focus"),
        ("", ""),
    ],
)  # fmt: skip
def test_plain_text_strips_inline_markup(docstring, plain):
    assert plain_text(docstring) == plain


@pytest.mark.parametrize(
    "command",
    [
        ["simulate", "--help"],
        ["tune", "--help"],
        ["plugins", "--help"],
        ["data", "import-recflow", "--help"],
        ["data", "synth-eshop", "--help"],
        ["report", "recflow", "--help"],
    ],
)
def test_command_help_has_no_restructuredtext(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(command)
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--" in out and not MARKUP.findall(out), MARKUP.findall(out)


@pytest.mark.slow
def test_lightning_help_and_class_help_have_no_restructuredtext(capsys, monkeypatch):
    monkeypatch.setattr("sys.argv", ["stcrank"])  # LightningCLI warns when given args beside pytest's argv
    for command in (["fit", "--help"], ["fit", "--model.help", "RankingTask"]):
        with pytest.raises(SystemExit):
            main(command)
        out = capsys.readouterr().out
        assert "--trainer" in out or "--model.network" in out
        assert not MARKUP.findall(out), (command, MARKUP.findall(out))
    with pytest.raises(SystemExit):
        main(["fit", "--model.help", "RankingTask"])
    assert "Train a RankingNetwork on exposures" in capsys.readouterr().out
