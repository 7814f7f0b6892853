"""``stcrank plugins``: list every installed plugin, built-in and third-party.

Listing reads the entry points from package metadata only: it imports no plugin, nor torch or Lightning, so it
answers at once. ``--check`` imports every plugin to show whether it loads.
"""

from __future__ import annotations

import json
import sys
import warnings

from stcrank import registry
from stcrank.commands.usage import ArgumentParser


def catalogue(check: bool = False) -> dict[str, dict[str, dict[str, str]]]:
    """Every installed plugin: ``{group: {name: {"class": "module:Class", "distribution": ..., "version": ...}}}``.

    Args:
        check: Also import every plugin and add its ``"status"``: ``"ok"``, or why it failed to load.

    Nothing is imported without ``check``: this reads the entry points only.
    """
    plugins = {
        group: {name: registry.describe(entry_point) for name, entry_point in registry.available(group).items()}
        for group in registry.GROUPS
    }
    if check:
        for group, entries in plugins.items():
            for name, info in entries.items():
                try:
                    registry.load(group, name)
                    info["status"] = "ok"
                except registry.PluginError as error:
                    info["status"] = str(error)
    return plugins


def format_table(plugins: dict[str, dict[str, dict[str, str]]]) -> str:
    """Render :func:`catalogue` as a fixed-width text table (with a status column after ``--check``)."""
    checked = any("status" in info for entries in plugins.values() for info in entries.values())
    rows = [("group", "name", "class", "distribution", *(["status"] if checked else []))]
    for group, entries in plugins.items():
        for name, info in entries.items():
            status = [info.get("status", "")] if checked else []
            rows.append((group, name, info["class"], f"{info['distribution']} {info['version']}", *status))
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def main(argv: list[str]) -> dict[str, dict[str, dict[str, str]]]:
    """Print the plugin catalogue as a table, or as JSON with ``--json``."""
    parser = ArgumentParser(prog="stcrank plugins", description="List installed stcrank plugins.")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--group", type=str | None, default=None, help="only this group (e.g. losses)")
    parser.add_argument(
        "--check", action="store_true", help="import every plugin and show whether it loads (imports torch)"
    )
    options = parser.parse_args(argv)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", registry.PluginWarning)  # printed below, once, without a source line
        plugins = catalogue(check=options.check)
    if options.group:
        full = registry.group_name(options.group)
        plugins = {full: plugins[full]}
    for group in plugins:
        for clash in registry.clashes(group).values():
            print(f"warning: {clash.message()}", file=sys.stderr)
    print(json.dumps(plugins, indent=2) if options.json else format_table(plugins))
    return plugins
