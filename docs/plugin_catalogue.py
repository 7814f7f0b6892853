"""Write the plugin catalogue page from the installed entry points (built-in and third-party alike)."""

from __future__ import annotations

import inspect
from pathlib import Path

from stcrank import registry


def _summary(cls: type) -> str:
    doc = inspect.getdoc(cls) or ""
    return doc.split("\n\n", 1)[0].replace("\n", " ").replace("|", "\\|")


def write_catalogue(path: Path) -> None:
    """Write one Markdown table per plugin group: name, class, distribution and the class's summary line."""
    lines = [
        "# Plugin catalogue",
        "",
        "Every plugin installed in the environment that built these pages, read from the entry points, so",
        "third-party packages appear beside the built-ins. `stcrank plugins` prints the same list.",
        "",
    ]
    for group in registry.GROUPS:
        lines += [f"## `{group}`", "", "| name | class | distribution | summary |", "|---|---|---|---|"]
        for name, entry_point in registry.available(group).items():
            info = registry.describe(entry_point)
            try:
                summary = _summary(registry.load(group, name))
            except registry.PluginError as error:
                summary = f"(failed to import: {error})"
            distribution = f"{info['distribution']} {info['version']}"
            lines.append(f"| `{name}` | `{info['class']}` | {distribution} | {summary} |")
        lines.append("")
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "\n".join(lines)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
