"""Entry-point registry of stcrank plugins.

Plugins are discovered through the standard :mod:`importlib.metadata` entry points, the same mechanism
for built-in plugins (declared in stcrank's own ``pyproject.toml``) and third-party ones. Discovery is lazy:
listing the available plugins reads package metadata and imports nothing (not even torch); a plugin's module is
imported only when it is loaded.

Five groups exist, one per plugin kind (see :mod:`stcrank.plugins` for the abstract bases)::

    stcrank.negative_samplers  stcrank.labels  stcrank.losses  stcrank.ensembles  stcrank.rerankers

A group can be named in full (``"stcrank.losses"``) or by its short name (``"losses"``).

**Name clashes.** A built-in plugin's name always means the built-in: a third-party distribution that declares
the same name in the same group is shadowed, whatever the install order, with a :class:`PluginWarning` naming
both distributions; its class stays reachable by its full class path. Two third-party distributions declaring
one name make that name ambiguous: it is listed by neither, and asking for it raises :class:`PluginError` naming
both class paths, so a config says which one it means.
"""

from __future__ import annotations

import functools
import importlib
import warnings
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from stcrank.errors import StcrankError

GROUPS: dict[str, str] = {
    "stcrank.negative_samplers": "NegativeSampler",
    "stcrank.labels": "LabelDefinition",
    "stcrank.losses": "Loss",
    "stcrank.ensembles": "Ensemble",
    "stcrank.rerankers": "Reranker",
}
"""Entry-point group name -> the name of the abstract base in :mod:`stcrank.plugins` every plugin subclasses."""

BUILTIN_DISTRIBUTION = "stcrank"
"""The distribution whose plugins are built in; their names win every clash."""


class PluginError(StcrankError, LookupError):
    """A plugin could not be found, imported or built."""


class NotAPluginError(PluginError):
    """A class or instance given for a plugin group is not a plugin of that group (a wrong setting)."""


class PluginWarning(UserWarning):
    """A plugin was skipped: a name clash, or a module that failed to import."""


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


def base_class(group: str) -> type:
    """The abstract base every plugin of ``group`` subclasses (this imports :mod:`stcrank.plugins`, so torch)."""
    plugins = importlib.import_module("stcrank.plugins")
    return getattr(plugins, GROUPS[group_name(group)])


def _base_path(group: str) -> str:
    return f"stcrank.plugins.{GROUPS[group]}"


def _distribution_of(entry_point: EntryPoint) -> tuple[str, str]:
    dist = getattr(entry_point, "dist", None)
    if dist is None:
        return "unknown", "unknown"
    return dist.metadata["Name"] or "unknown", dist.version or "unknown"


def is_builtin(entry_point: EntryPoint) -> bool:
    """Whether an entry point is one of stcrank's own plugins (declared by the ``stcrank`` distribution)."""
    return _distribution_of(entry_point)[0].lower().replace("_", "-") == BUILTIN_DISTRIBUTION


def _label(entry_point: EntryPoint) -> str:
    distribution, version = _distribution_of(entry_point)
    role = " (built-in)" if is_builtin(entry_point) else ""
    return f"distribution {distribution!r} {version}{role}: {entry_point.value}"


@dataclass(frozen=True)
class Clash:
    """Several distributions declare one plugin name in one group.

    Attributes:
        group: The full group name.
        name: The plugin name.
        declared: Every entry point declaring it, in discovery order.
        kept: The one the name means (the built-in), or None when the name is ambiguous.
    """

    group: str
    name: str
    declared: tuple[EntryPoint, ...]
    kept: EntryPoint | None

    def message(self) -> str:
        """One sentence naming every distribution, what the name means, and how to reach the others."""
        declared = "; ".join(_label(entry_point) for entry_point in self.declared)
        head = f"plugin name {self.name!r} of group {self.group!r} is declared by several distributions ({declared})"
        if self.kept is not None:
            others = ", ".join(entry_point.value for entry_point in self.declared if entry_point is not self.kept)
            return (
                f"{head}: {self.name!r} means the built-in {self.kept.value}; name the other by its class path "
                f"({others})"
            )
        paths = ", ".join(entry_point.value for entry_point in self.declared)
        return f"{head}: the name is ambiguous, so name the plugin by its class path ({paths})"


@functools.cache
def _discover(group: str) -> tuple[dict[str, EntryPoint], dict[str, Clash]]:
    declared: dict[str, list[EntryPoint]] = {}
    for entry_point in entry_points(group=group):
        same = declared.setdefault(entry_point.name, [])
        if all(other.value != entry_point.value for other in same):  # one class declared twice is no clash
            same.append(entry_point)
    found: dict[str, EntryPoint] = {}
    clashes: dict[str, Clash] = {}
    for name, candidates in declared.items():
        if len(candidates) == 1:
            found[name] = candidates[0]
            continue
        builtins = [entry_point for entry_point in candidates if is_builtin(entry_point)]
        kept = builtins[0] if builtins else None
        clashes[name] = Clash(group, name, tuple(candidates), kept)
        if kept is not None:
            found[name] = kept
        warnings.warn(clashes[name].message(), PluginWarning, stacklevel=4)
    return found, clashes


def refresh() -> None:
    """Forget the cached discovery, so that plugins installed or removed since are seen."""
    _discover.cache_clear()
    importlib.invalidate_caches()


def available(group: str) -> dict[str, EntryPoint]:
    """List the plugins of a group by entry-point name, without importing any of them.

    A name declared by several distributions means the built-in one; a name two third-party distributions
    declare is left out (see :func:`clashes`).

    Args:
        group: A group name, full or short (``"losses"``).

    Returns:
        A mapping from plugin name to its :class:`importlib.metadata.EntryPoint`, sorted by name.
    """
    return dict(sorted(_discover(group_name(group))[0].items()))


def clashes(group: str) -> dict[str, Clash]:
    """The names of a group that several distributions declare, by name (see :class:`Clash`)."""
    return dict(sorted(_discover(group_name(group))[1].items()))


def describe(entry_point: EntryPoint) -> dict[str, str]:
    """Describe one entry point as ``{"class": "module:Class", "distribution": ..., "version": ...}``."""
    distribution, version = _distribution_of(entry_point)
    return {"class": entry_point.value, "distribution": distribution, "version": version}


def _check_subclass(group: str, plugin: Any, what: str, error: type[PluginError] = NotAPluginError) -> type:
    base = base_class(group)
    if not (isinstance(plugin, type) and issubclass(plugin, base)):
        raise error(
            f"{what} is not a {group} plugin (a subclass of {_base_path(group)}); only plugins of that group can "
            f"be named here: see `stcrank plugins --group {group.removeprefix('stcrank.')}`"
        )
    return plugin


def _import_entry_point(group: str, entry_point: EntryPoint) -> type:
    try:
        plugin = entry_point.load()
    except Exception as error:
        distribution = _distribution_of(entry_point)[0]
        raise PluginError(
            f"plugin {entry_point.name!r} of group {group!r} (distribution {distribution!r}, "
            f"{entry_point.value}) failed to import: {type(error).__name__}: {error}"
        ) from error
    # An installed entry point of the wrong kind is the plugin's fault, not a wrong setting.
    return _check_subclass(group, plugin, f"plugin {entry_point.name!r} ({entry_point.value})", PluginError)


def _import_dotted(group: str, path: str) -> type:
    module_name, _, attribute = path.replace(":", ".").rpartition(".")
    try:
        plugin = getattr(importlib.import_module(module_name), attribute)
    except Exception as error:
        raise PluginError(f"cannot import {path!r} for group {group!r}: {type(error).__name__}: {error}") from error
    return _check_subclass(group, plugin, repr(path))


def _by_class_name(group: str, name: str) -> EntryPoint | None:
    matches = [entry_point for entry_point in available(group).values() if entry_point.value.rpartition(":")[2] == name]
    if len(matches) > 1:
        builtins = [entry_point for entry_point in matches if is_builtin(entry_point)]
        if len(builtins) == 1:
            return builtins[0]
        paths = ", ".join(entry_point.value for entry_point in matches)
        raise PluginError(f"class name {name!r} is ambiguous in group {group!r} ({paths}); give its class path")
    return matches[0] if matches else None


def load(group: str, name: str) -> type:
    """Import and return a plugin class.

    Args:
        group: A group name, full or short.
        name: An entry-point name (``"fs_ltr"``), the class name of a registered plugin
            (``"FSLTRLoss"``), or a full import path (``"my_pkg.losses.MyLoss"`` or ``"my_pkg.losses:MyLoss"``).
            An entry-point or class name shared with a built-in plugin means the built-in.

    Returns:
        The plugin class, a subclass of the group's abstract base.

    Raises:
        PluginError: If nothing of that name exists (the message lists the available names), the name is
            ambiguous, or the class fails to import, or it is not a subclass of the group's base.
    """
    group = group_name(group)
    plugins = available(group)
    if name in plugins:
        return _import_entry_point(group, plugins[name])
    clash = clashes(group).get(name)
    if clash is not None:
        raise PluginError(clash.message())
    entry_point = _by_class_name(group, name)
    if entry_point is not None:
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
    an entry-point name, a class name with ``init_args`` or a full ``class_path``. Anything else, including an
    instance of a class that is not a plugin of ``group``, is refused with a :class:`PluginError` naming the
    group.
    """
    group = group_name(group)
    if isinstance(plugin, str):
        return build(group, plugin)
    _check_subclass(group, type(plugin), f"{type(plugin).__module__}.{type(plugin).__qualname__}")
    return plugin


def import_all(group: str | None = None) -> dict[str, dict[str, type]]:
    """Import every installed plugin, so that class names resolve when configs are parsed.

    A plugin whose import fails is skipped with a :class:`PluginWarning` naming its distribution. Plugins a
    name clash shadows are not imported.

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
