import sys
import warnings
from pathlib import Path

import pytest
from jsonargparse import ArgumentParser

from stcrank import registry
from stcrank.plugins import Loss
from stcrank.registry import PluginError, PluginWarning
from stcrank_plugins.losses.pointwise import BCELoss


def test_groups_accept_short_and_full_names():
    assert registry.group_name("losses") == "stcrank.losses"
    assert registry.group_name("stcrank.rerankers") == "stcrank.rerankers"
    with pytest.raises(PluginError, match="unknown plugin group 'lossez'"):
        registry.group_name("lossez")


def test_available_lists_builtins_without_importing_them():
    sys.modules.pop("stcrank_plugins.rerankers.exact", None)
    names = registry.available("rerankers")
    assert {"greedy", "beam_search", "exact"} <= set(names)
    assert "stcrank_plugins.rerankers.exact" not in sys.modules
    assert registry.describe(names["exact"])["distribution"] == "stcrank"


def test_load_by_entry_point_name_class_name_and_path():
    assert registry.load("losses", "bce") is BCELoss
    assert registry.load("losses", "BCELoss") is BCELoss
    assert registry.load("losses", "stcrank_plugins.losses.pointwise.BCELoss") is BCELoss
    assert registry.load("losses", "stcrank_plugins.losses.pointwise:BCELoss") is BCELoss
    assert isinstance(registry.build("losses", "bce"), BCELoss)


def test_unknown_name_names_group_and_lists_available():
    with pytest.raises(PluginError) as error:
        registry.load("losses", "fs_ltrr")
    message = str(error.value)
    assert "'fs_ltrr'" in message and "stcrank.losses" in message and "fs_ltr" in message and "bce" in message


def test_a_class_of_the_wrong_kind_is_refused():
    with pytest.raises(PluginError, match=r"not a stcrank.losses plugin"):
        registry.load("losses", "stcrank_plugins.rerankers.greedy.GreedyReranker")


@pytest.mark.parametrize("path", ["torch.nn.MSELoss", "collections.OrderedDict", "os.path.join", "os:getcwd"])
def test_a_class_path_outside_the_group_is_refused_naming_the_group(path):
    with pytest.raises(registry.NotAPluginError, match=r"not a stcrank\.losses plugin.*stcrank\.plugins\.Loss"):
        registry.load("losses", path)


def test_a_module_failing_at_import_is_a_plugin_error(fake_distribution):
    fake_distribution("raising_dist", "", {"raising_module": "raise RuntimeError('boom')\n"})
    with pytest.raises(PluginError, match=r"cannot import 'raising_module.Loss'.*RuntimeError: boom"):
        registry.load("losses", "raising_module.Loss")


def test_resolve_refuses_an_instance_of_another_group():
    with pytest.raises(registry.NotAPluginError, match=r"not a stcrank.losses plugin"):
        registry.resolve("losses", registry.build("rerankers", "greedy"))


def test_bad_init_args_are_reported_with_the_plugin_name():
    with pytest.raises(PluginError, match="cannot build plugin 'bce'"):
        registry.build("losses", "bce", no_such_argument=1)


@pytest.mark.parametrize(
    "config",
    [
        "loss: bce",
        "loss:\n  class_path: BCELoss\n  init_args: {}",
        "loss:\n  class_path: stcrank_plugins.losses.pointwise.BCELoss",
    ],
    ids=["entry-point-name", "class-name-with-init-args", "class-path"],
)
def test_three_yaml_spellings_build_the_same_plugin(config):
    registry.import_all("losses")
    parser = ArgumentParser()
    parser.add_argument("--loss", type=Loss | str)
    parsed = parser.instantiate(parser.parse_string(config))
    assert isinstance(registry.resolve("losses", parsed.loss), BCELoss)


def test_unknown_yaml_key_fails():
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--loss", type=Loss | str)
    with pytest.raises(Exception, match="lossss"):
        parser.parse_string("lossss: bce")


IMPOSTOR = """
from stcrank.plugins import Loss


class BCELoss(Loss):
    def forward(self, scores, target, mask, weight=None):
        return scores.sum() * 0
"""


@pytest.mark.parametrize("first", [True, False], ids=["found-before-stcrank", "found-after-stcrank"])
def test_a_third_party_cannot_take_a_builtin_name(fake_distribution, first):
    fake_distribution(
        "aa_impostor", "[stcrank.losses]\nbce = aa_impostor_losses:BCELoss\n", {"aa_impostor_losses": IMPOSTOR}, first
    )
    with pytest.warns(PluginWarning) as caught:
        names = registry.available("losses")
    message = str(caught[0].message)
    assert "'bce'" in message and "'stcrank'" in message and "'aa_impostor'" in message, message
    assert "aa_impostor_losses:BCELoss" in message  # how to reach the shadowed class
    assert names["bce"].value == "stcrank_plugins.losses.pointwise:BCELoss"
    assert registry.load("losses", "bce") is BCELoss
    assert registry.load("losses", "BCELoss") is BCELoss
    assert "aa_impostor_losses" not in registry.import_all("losses")["stcrank.losses"]["bce"].__module__
    assert "aa_impostor_losses" not in sys.modules  # a shadowed plugin is never imported by name
    impostor = registry.load("losses", "aa_impostor_losses:BCELoss")  # still reachable by its class path
    assert impostor is not BCELoss and issubclass(impostor, Loss)
    assert set(registry.clashes("losses")) == {"bce"}


def test_two_third_parties_declaring_one_name_make_it_ambiguous(fake_distribution):
    fake_distribution("zz_one", "[stcrank.losses]\nshared = zz_one_losses:BCELoss\n", {"zz_one_losses": IMPOSTOR})
    fake_distribution("zz_two", "[stcrank.losses]\nshared = zz_two_losses:BCELoss\n", {"zz_two_losses": IMPOSTOR})
    with pytest.warns(PluginWarning, match=r"'shared'.*'zz_one'.*'zz_two'.*ambiguous"):
        assert "shared" not in registry.available("losses")
    with pytest.raises(PluginError, match=r"ambiguous.*zz_one_losses:BCELoss.*zz_two_losses:BCELoss"):
        registry.load("losses", "shared")
    assert registry.load("losses", "zz_two_losses.BCELoss").__module__ == "zz_two_losses"


def test_one_class_declared_by_two_distributions_is_no_clash(fake_distribution):
    fake_distribution("aa_alias", "[stcrank.losses]\nbce = stcrank_plugins.losses.pointwise:BCELoss\n", first=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert registry.load("losses", "bce") is BCELoss
    assert registry.clashes("losses") == {}


def test_the_stock_din_config_builds_the_builtin_loss_despite_an_impostor(fake_distribution, recflow_store):
    from stcrank.commands.lightning import StcrankCLI, import_components
    from stcrank.data.base import BaseDataModule
    from stcrank.tasks.base import BaseTask

    fake_distribution(
        "aa_impostor", "[stcrank.losses]\nbce = aa_impostor_losses:BCELoss\n", {"aa_impostor_losses": IMPOSTOR}, True
    )
    config = Path(__file__).resolve().parents[1] / "configs/experiments/recflow/rank/din_baseline.yaml"
    with pytest.warns(PluginWarning, match="'bce'"):
        import_components()
    cli = StcrankCLI(
        BaseTask,
        BaseDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        run=False,
        args=["-c", str(config), f"--data.root={recflow_store}", "--trainer.logger=false"],
    )
    assert type(cli.model.loss) is BCELoss


def test_broken_plugin_is_a_warning_naming_its_distribution(fake_distribution):
    fake_distribution(
        "broken_plugin_dist",
        "[stcrank.losses]\nbroken = broken_plugin_module:BrokenLoss\n",
        {"broken_plugin_module": "raise RuntimeError('boom at import')\n"},
    )
    assert "broken" in registry.available("losses")
    with pytest.warns(PluginWarning, match="broken_plugin_dist.*boom at import"):
        loaded = registry.import_all("losses")
    assert "broken" not in loaded["stcrank.losses"] and "bce" in loaded["stcrank.losses"]
    with pytest.raises(PluginError, match="broken_plugin_dist"):
        registry.load("losses", "broken")


def test_resolve_passes_instances_and_rejects_other_objects():
    loss = BCELoss()
    assert registry.resolve("losses", loss) is loss
    with pytest.raises(PluginError, match=r"builtins.object is not a stcrank.losses plugin"):
        registry.resolve("losses", object())


def test_listing_never_crashes_on_broken_plugins(fake_distribution):
    fake_distribution("broken_two", "[stcrank.rerankers]\nnope = not_a_module_at_all:Nope\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert "nope" in registry.available("rerankers")
