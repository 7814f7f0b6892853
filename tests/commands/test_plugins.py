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


def test_listing_imports_neither_torch_nor_lightning():
    code = (
        "import sys; from stcrank.cli import main; main(['plugins']); main(['plugins', '--json']);"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'lightning', 'stcrank_plugins'));"
        "print(loaded)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "[]"


def test_check_imports_every_plugin_and_reports_failures(fake_distribution, capsys):
    fake_distribution("broken_listing", "[stcrank.losses]\nbroken = no_such_module_here:Broken\n")
    plugins = main(["plugins", "--group", "losses", "--check"])
    assert plugins["stcrank.losses"]["bce"]["status"] == "ok"
    assert "no_such_module_here" in plugins["stcrank.losses"]["broken"]["status"]
    header = capsys.readouterr().out.splitlines()[0].split()
    assert header == ["group", "name", "class", "distribution", "status"]


def test_a_name_clash_is_printed_once_naming_both_distributions(fake_distribution, capsys):
    fake_distribution("aa_shadow", "[stcrank.rerankers]\ngreedy = aa_shadow_module:Greedy\n", first=True)
    plugins = main(["plugins", "--group", "rerankers", "--json"])
    assert plugins["stcrank.rerankers"]["greedy"]["distribution"] == "stcrank"
    err = capsys.readouterr().err
    assert err.count("warning:") == 1 and "'aa_shadow'" in err and "'stcrank'" in err
