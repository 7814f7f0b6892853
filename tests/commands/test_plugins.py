import json
import subprocess
import sys

from stcrank.cli import main
from stcrank.commands.plugins import catalogue, format_table


def test_catalogue_has_every_group_with_class_distribution_and_version():
    plugins = catalogue()
    assert set(plugins) == {
        "stcrank.negative_samplers",
        "stcrank.labels",
        "stcrank.losses",
        "stcrank.ensembles",
        "stcrank.rerankers",
    }
    assert plugins["stcrank.losses"]["bce"] == {
        "class": "stcrank_plugins.losses.pointwise:BCELoss",
        "distribution": "stcrank",
        "version": plugins["stcrank.losses"]["bce"]["version"],
    }
    assert plugins["stcrank.labels"]["effective_view"]["class"].endswith(":EffectiveViewLabel")


def test_json_output_parses(capsys):
    main(["plugins", "--json"])
    printed = json.loads(capsys.readouterr().out)
    assert printed == catalogue()


def test_table_lists_one_line_per_plugin(capsys):
    main(["plugins", "--group", "rerankers"])
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["group", "name", "class", "distribution"]
    assert {"greedy", "beam_search", "exact"} <= {line.split()[1] for line in out.splitlines()[2:]}
    assert format_table({}).count("\n") == 1


def test_console_entry_point_and_module_run():
    result = subprocess.run([sys.executable, "-m", "stcrank", "plugins", "--json"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "stcrank.losses" in json.loads(result.stdout)
