"""Settings checked where they are used, with errors that name the command-line option they came from."""

from __future__ import annotations

from typing import Any

from stcrank import registry
from stcrank.errors import ConfigError


class PluginOptionError(registry.PluginError, ConfigError):
    """An option names something that is not a plugin of its group (a wrong setting: exit status 2)."""


class UnknownPluginError(PluginOptionError):
    """An option names a plugin that is not installed (a usage error: exit status 2)."""


def resolve_plugin(group: str, value: Any, option: str) -> Any:
    """:func:`stcrank.registry.resolve`, with an error that names the option the plugin came from.

    Args:
        group: The plugin group (``"losses"``).
        value: A plugin name or instance.
        option: The option as typed on the command line (``--model.loss``).

    Raises:
        PluginError: ``--model.loss bcee: unknown plugin 'bcee' ...``.
    """
    try:
        return registry.resolve(group, value)
    except registry.PluginError as error:
        # A class outside the group is a wrong setting; a plugin that fails to import or build is not.
        kind = PluginOptionError if isinstance(error, registry.NotAPluginError) else registry.PluginError
        if not isinstance(value, str):
            raise kind(f"{option}: {error}") from error
        if not str(error).startswith("unknown plugin"):
            raise kind(f"{option} {value}: {error}") from error
        from stcrank.commands.usage import did_you_mean

        names = list(registry.available(group))
        hint = did_you_mean(value, names)
        raise UnknownPluginError(
            f"{option} {value}: unknown plugin in group {registry.group_name(group)}{hint} (installed: "
            f"{', '.join(names) or 'none'}; a class path such as my_package.MyLoss also works)"
        ) from error
