"""Write the plugin catalogue page from the installed entry points (built-in and third-party alike)."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from stcrank import registry


def _summary(cls: type) -> str:
    doc = inspect.getdoc(cls) or ""
    summary = doc.split("\n\n", 1)[0].replace("\n", " ")
    # reStructuredText roles (:class:`X`) as MyST writes them ({py:class}`X`), so they render in the table.
    return re.sub(r":(?:py:)?(\w+):`", lambda m: "{doc}`" if m.group(1) == "doc" else f"{{py:{m.group(1)}}}`", summary)


def write_catalogue(path: Path) -> None:
    """Write one table per plugin group: name, the class's summary line, the class and its distribution.

    The name and summary come first so that they stay in view on a narrow screen; the class is its short name,
    linked to its API page (the full ``module:Class`` is what ``stcrank plugins`` prints).
    """
    lines = [
        "# Plugin catalogue",
        "",
        "Every plugin installed in the environment that built these pages, read from the entry points, so",
        "third-party packages appear beside the built-ins. `stcrank plugins` prints the same list.",
        "",
    ]
    for group in registry.GROUPS:
        lines += [
            f"## `{group}`",
            "",
            "```{list-table}",
            ":header-rows: 1",
            ":widths: 16 52 20 12",
            ":class: stcrank-catalogue",
            "",
            "* - name",
            "  - summary",
            "  - class",
            "  - distribution",
        ]
        for name, entry_point in registry.available(group).items():
            info = registry.describe(entry_point)
            try:
                summary = _summary(registry.load(group, name))
            except registry.PluginError as error:
                summary = f"(failed to import: {error})"
            module, _, attribute = info["class"].partition(":")
            lines += [
                f"* - `{name}`",
                f"  - {summary}",
                f"  - {{py:class}}`~{module}.{attribute}`",
                f"  - {info['distribution']} {info['version']}",
            ]
        lines += ["```", ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "\n".join(lines)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
