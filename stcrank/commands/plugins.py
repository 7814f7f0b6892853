"""``stcrank plugins``: list every installed plugin, built-in and third-party."""

from __future__ import annotations

import json

from stcrank import registry
from stcrank.commands.help_format import PlainArgumentParser


def catalogue() -> dict[str, dict[str, dict[str, str]]]:
    """Every installed plugin: ``{group: {name: {"class": "module:Class", "distribution": ..., "version": ...}}}``.

    Nothing is imported: this reads the entry points only.
    """
    return {
        group: {name: registry.describe(entry_point) for name, entry_point in registry.available(group).items()}
        for group in registry.GROUPS
    }


def format_table(plugins: dict[str, dict[str, dict[str, str]]]) -> str:
    """Render :func:`catalogue` as a fixed-width text table."""
    rows = [("group", "name", "class", "distribution")]
    for group, entries in plugins.items():
        for name, info in entries.items():
            rows.append((group, name, info["class"], f"{info['distribution']} {info['version']}"))
    widths = [max(len(row[column]) for row in rows) for column in range(4)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def main(argv: list[str]) -> dict[str, dict[str, dict[str, str]]]:
    """Print the plugin catalogue as a table, or as JSON with ``--json``."""
    parser = PlainArgumentParser(prog="stcrank plugins", description="List installed stcrank plugins.")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--group", type=str | None, default=None, help="only this group (e.g. losses)")
    options = parser.parse_args(argv)
    plugins = catalogue()
    if options.group:
        full = registry.group_name(options.group)
        plugins = {full: plugins[full]}
    print(json.dumps(plugins, indent=2) if options.json else format_table(plugins))
    return plugins
