"""Entry-point registry of stcrank plugins.

Plugins are discovered through the standard :mod:`importlib.metadata` entry points, the same mechanism
for built-in plugins (declared in stcrank's own ``pyproject.toml``) and third-party ones. Discovery is lazy:
listing the available plugins imports nothing; a plugin's module is imported only when it is loaded.

Five groups exist, one per plugin kind (see :mod:`stcrank.plugins` for the abstract bases)::

    stcrank.negative_samplers  stcrank.labels  stcrank.losses  stcrank.ensembles  stcrank.rerankers

A group can be named in full (``"stcrank.losses"``) or by its short name (``"losses"``).
"""

from __future__ import annotations

import functools
import importlib
import warnings
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from stcrank.errors import StcrankError
from stcrank.plugins import Ensemble, LabelDefinition, Loss, NegativeSampler, Reranker

GROUPS: dict[str, type] = {
    "stcrank.negative_samplers": NegativeSampler,
    "stcrank.labels": LabelDefinition,
    "stcrank.losses": Loss,
    "stcrank.ensembles": Ensemble,
    "stcrank.rerankers": Reranker,
}
"""Entry-point group name -> the abstract base every plugin of that group subclasses."""


class PluginError(StcrankError, LookupError):
    """A plugin could not be found, imported or built."""


class PluginWarning(UserWarning):
    """A plugin was skipped: a duplicate name, or a module that failed to import."""


def group_name(group: str) -> str:
    """Return the full entry-point group name for ``group``.

    Args:
        group: A full group name (``"stcrank.losses"``) or its short form (``"losses"``).

    Raises:
        PluginError: If the group is not one of stcrank's plugin groups.
    """
    full = group if group.startswith("stcrank.") else f"stcrank.{group}"
    if full not in GROUPS:
        raise PluginError(f"unknown plugin group {group!r}; the groups are: {', '.join(GROUPS)}")
    return full


def _distribution_of(entry_point: EntryPoint) -> tuple[str, str]:
    dist = getattr(entry_point, "dist", None)
    if dist is None:
        return "unknown", "unknown"
    return dist.metadata["Name"] or "unknown", dist.version or "unknown"


@functools.cache
def _discover(group: str) -> dict[str, EntryPoint]:
    found: dict[str, EntryPoint] = {}
    for entry_point in entry_points(group=group):
        if entry_point.name in found:
            kept = _distribution_of(found[entry_point.name])[0]
            skipped = _distribution_of(entry_point)[0]
            warnings.warn(
                f"duplicate plugin name {entry_point.name!r} in group {group!r}: keeping the one from "
                f"distribution {kept!r} ({found[entry_point.name].value}), ignoring the one from "
                f"{skipped!r} ({entry_point.value})",
                PluginWarning,
                stacklevel=3,
            )
            continue
        found[entry_point.name] = entry_point
    return found


def refresh() -> None:
    """Forget the cached discovery, so that plugins installed or removed since are seen."""
    _discover.cache_clear()
    importlib.invalidate_caches()


def available(group: str) -> dict[str, EntryPoint]:
    """List the plugins of a group by entry-point name, without importing any of them.

    Args:
        group: A group name, full or short (``"losses"``).

    Returns:
        A mapping from plugin name to its :class:`importlib.metadata.EntryPoint`, sorted by name.
    """
    return dict(sorted(_discover(group_name(group)).items()))


def describe(entry_point: EntryPoint) -> dict[str, str]:
    """Describe one entry point as ``{"class": "module:Class", "distribution": ..., "version": ...}``."""
    distribution, version = _distribution_of(entry_point)
    return {"class": entry_point.value, "distribution": distribution, "version": version}


def _import_entry_point(group: str, entry_point: EntryPoint) -> type:
    try:
        plugin = entry_point.load()
    except Exception as error:
        distribution = _distribution_of(entry_point)[0]
        raise PluginError(
            f"plugin {entry_point.name!r} of group {group!r} (distribution {distribution!r}, "
            f"{entry_point.value}) failed to import: {type(error).__name__}: {error}"
        ) from error
    base = GROUPS[group]
    if not (isinstance(plugin, type) and issubclass(plugin, base)):
        raise PluginError(
            f"plugin {entry_point.name!r} of group {group!r} ({entry_point.value}) is not a subclass of "
            f"{base.__module__}.{base.__qualname__}"
        )
    return plugin


def _import_dotted(group: str, path: str) -> type:
    module_name, _, attribute = path.replace(":", ".").rpartition(".")
    try:
        plugin = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise PluginError(f"cannot import {path!r} for group {group!r}: {error}") from error
    base = GROUPS[group]
    if not (isinstance(plugin, type) and issubclass(plugin, base)):
        raise PluginError(f"{path!r} is not a subclass of {base.__module__}.{base.__qualname__}")
    return plugin


def load(group: str, name: str) -> type:
    """Import and return a plugin class.

    Args:
        group: A group name, full or short.
        name: An entry-point name (``"fs_ltr"``), the class name of a registered plugin
            (``"FSLTRLoss"``), or a full import path (``"my_pkg.losses.MyLoss"`` or ``"my_pkg.losses:MyLoss"``).

    Returns:
        The plugin class, a subclass of the group's abstract base.

    Raises:
        PluginError: If nothing of that name exists (the message lists the available names), or it fails
            to import, or it is not a subclass of the group's base.
    """
    group = group_name(group)
    plugins = available(group)
    if name in plugins:
        return _import_entry_point(group, plugins[name])
    for entry_point in plugins.values():
        if entry_point.value.rpartition(":")[2] == name:
            return _import_entry_point(group, entry_point)
    if "." in name or ":" in name:
        return _import_dotted(group, name)
    raise PluginError(
        f"unknown plugin {name!r} in group {group!r}; available: {', '.join(plugins) or '(none installed)'}"
    )


def build(group: str, name: str, **init_args: Any) -> Any:
    """Load a plugin class by name and instantiate it.

    Args:
        group: A group name, full or short.
        name: Any spelling accepted by :func:`load`.
        **init_args: Keyword arguments for the plugin's constructor.

    Returns:
        The plugin instance.
    """
    plugin = load(group, name)
    try:
        return plugin(**init_args)
    except TypeError as error:
        raise PluginError(f"cannot build plugin {name!r} of group {group_name(group)!r}: {error}") from error


def resolve(group: str, plugin: Any) -> Any:
    """Return ``plugin`` as an instance: strings are built by name with no arguments, instances pass through.

    This is what components call on a plugin-typed argument declared as ``Loss | str``, so that YAML can give
    an entry-point name, a class name with ``init_args`` or a full ``class_path``.
    """
    if isinstance(plugin, str):
        return build(group, plugin)
    base = GROUPS[group_name(group)]
    if not isinstance(plugin, base):
        raise PluginError(f"expected a {base.__qualname__} or a plugin name for group {group!r}, got {plugin!r}")
    return plugin


def import_all(group: str | None = None) -> dict[str, dict[str, type]]:
    """Import every installed plugin, so that class names resolve when configs are parsed.

    A plugin whose import fails is skipped with a :class:`PluginWarning` naming its distribution.

    Args:
        group: Only this group; all groups when None.

    Returns:
        ``{group: {name: class}}`` of the plugins that imported.
    """
    groups = [group_name(group)] if group else list(GROUPS)
    loaded: dict[str, dict[str, type]] = {}
    for full in groups:
        loaded[full] = {}
        for name, entry_point in available(full).items():
            try:
                loaded[full][name] = _import_entry_point(full, entry_point)
            except PluginError as error:
                warnings.warn(str(error), PluginWarning, stacklevel=2)
    return loaded
