"""The table of evaluation metrics the command line prints: one block per evaluation set, each metric once.

Metrics named ``name@K`` are laid out as one row per name and one column per cut-off ``K``::

    exposures
      auc             0.6601
      logloss         0.6211

    stage candidates      @50     @100     @200
      recall            0.5174   0.8326   1.0000
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

_AT_K = re.compile(r"^(?P<name>.+)@(?P<k>\d+)$")


def _value(value: float, name: str = "") -> str:
    if math.isnan(value):
        return "nan"
    return f"{value:.0f}" if name.endswith("_excluded") else f"{value:.4f}"  # counts of left-out groups


def _block(title: str, names: Sequence[str], metrics: Mapping[str, float]) -> list[str]:
    plain = [name for name in names if not _AT_K.match(name)]
    cut: dict[str, dict[int, float]] = {}
    for name in names:
        match = _AT_K.match(name)
        if match:
            cut.setdefault(match["name"], {})[int(match["k"])] = metrics[name]
    ks = sorted({k for values in cut.values() for k in values})
    width = max([len(name) for name in [*plain, *cut]] + [10]) + 2
    header = title if not ks else title.ljust(width + 2) + "".join(f"{'@' + str(k):>9}" for k in ks)
    lines = [header]
    lines += [f"  {name:<{width}}{_value(metrics[name], name):>9}" for name in plain]
    for name, values in cut.items():
        cells = "".join(f"{_value(values[k]) if k in values else '':>9}" for k in ks)
        lines.append(f"  {name:<{width}}{cells}")
    return lines


def format_results(
    title: str, metrics: Mapping[str, float], sets: Mapping[str, Sequence[str]], footer: str = ""
) -> str:
    """Render evaluation metrics by set.

    Args:
        title: The first line.
        metrics: Metric name (without the ``test/`` prefix) -> value.
        sets: Evaluation set -> the names of its metrics; metrics of no set are shown under ``other``.
        footer: A last line (e.g. where metrics.csv is).

    Returns:
        The text, without a trailing newline.
    """
    lines = [title]
    shown: set[str] = set()
    for name, members in [*sets.items(), ("other", [m for m in metrics if not any(m in s for s in sets.values())])]:
        present = [member for member in members if member in metrics and member not in shown]
        if present:
            lines += ["", *_block(name, present, metrics)]
            shown.update(present)
    if not shown:
        lines += ["", "  (no metric was logged)"]
    if any(math.isnan(value) for value in metrics.values()):
        lines += ["", "nan: undefined on this data (an AUC needs labels of both classes)"]
    if footer:
        lines += ["", footer]
    return "\n".join(lines)
