import sys
import warnings

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
    with pytest.raises(PluginError, match="not a subclass"):
        registry.load("losses", "stcrank_plugins.rerankers.greedy.GreedyReranker")


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


def test_duplicate_name_warns_and_keeps_the_first(fake_distribution):
    fake_distribution(
        "zz_duplicate_losses",
        "[stcrank.losses]\nbce = zz_duplicate_losses_module:OtherLoss\n",
    )
    with pytest.warns(PluginWarning, match="duplicate plugin name 'bce'.*zz_duplicate_losses"):
        names = registry.available("losses")
    assert names["bce"].value == "stcrank_plugins.losses.pointwise:BCELoss"


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
    with pytest.raises(PluginError, match="expected a Loss"):
        registry.resolve("losses", object())


def test_listing_never_crashes_on_broken_plugins(fake_distribution):
    fake_distribution("broken_two", "[stcrank.rerankers]\nnope = not_a_module_at_all:Nope\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert "nope" in registry.available("rerankers")
