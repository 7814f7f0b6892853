import re

import pytest

from stcrank.errors import ConfigError
from stcrank.options import PluginOptionError, UnknownPluginError, resolve_plugin
from stcrank.registry import PluginError
from stcrank_plugins.losses.pointwise import BCELoss


def test_an_unknown_plugin_names_the_option_and_the_closest_name():
    with pytest.raises(
        UnknownPluginError, match=r"^--model\.loss bcee: unknown plugin .*; did you mean bce\?"
    ) as error:
        resolve_plugin("losses", "bcee", "--model.loss")
    assert isinstance(error.value, PluginError) and isinstance(error.value, ConfigError)
    assert error.value.exit_code == 2


def test_names_and_instances_resolve():
    assert isinstance(resolve_plugin("losses", "bce", "--model.loss"), BCELoss)
    loss = BCELoss()
    assert resolve_plugin("losses", loss, "--model.loss") is loss
    with pytest.raises(PluginError, match=r"^--model\.loss: builtins\.int is not a stcrank\.losses plugin"):
        resolve_plugin("losses", 3, "--model.loss")


@pytest.mark.parametrize("value", ["torch.nn.MSELoss", "stcrank_plugins.rerankers.greedy.GreedyReranker"])
def test_a_class_outside_the_group_is_a_wrong_setting_naming_the_option(value):
    expected = rf"^--model\.loss {re.escape(value)}: '{re.escape(value)}' is not a stcrank\.losses plugin"
    with pytest.raises(PluginOptionError, match=expected) as error:
        resolve_plugin("losses", value, "--model.loss")
    assert isinstance(error.value, PluginError) and isinstance(error.value, ConfigError)
    assert error.value.exit_code == 2
