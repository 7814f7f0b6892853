"""One PNG per experiment table: every metric's mean per row with ± one sample standard deviation.

Drawn with Matplotlib's ``Agg`` canvas on a bare :class:`~matplotlib.figure.Figure` (no ``pyplot``: no global
state, no window, no display needed).
"""

from __future__ import annotations

import math
from pathlib import Path

from stcrank.reports.tables import Table, compare, display_name, higher_is_better, metric_label, metric_scale

__all__ = ["plot_table"]

_COLUMNS = 3
_BASELINE_COLOUR, _ROW_COLOUR, _MISSING_COLOUR = "#555555", "#1f77b4", "#d62728"


def plot_table(table: Table, path: str | Path, alpha: float = 0.05) -> Path:
    """Save a chart of a table: one panel per metric, one point per row with an error bar of ± one std.

    The baseline is grey, with a dashed line at its mean. Rows significantly different from the baseline
    (paired t-test at ``alpha``) get a ``†`` above their point; rows without results are labelled in red with
    why (``config missing``, ``failed``, ``not run``).

    Args:
        table: The table.
        path: The PNG file to write (parent folders are created).
        alpha: Significance level of the markers.

    Returns:
        The written path.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n_metrics = max(1, len(table.metrics))
    columns = min(_COLUMNS, n_metrics)
    lines = math.ceil(n_metrics / columns)
    height = max(2.5, 0.35 * len(table.rows) + 1.2)
    figure = Figure(figsize=(4.2 * columns, height * lines), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(lines, columns, squeeze=False)
    names = [row.name for row in table.rows]
    positions = list(range(len(names)))
    baseline = table.baseline_row
    for index, metric in enumerate(table.metrics):
        ax = axes[index // columns][index % columns]
        scale = metric_scale(metric, table.percent)
        for position, row in zip(positions, table.rows, strict=True):
            centre, spread, n = row.summary(metric, scale)
            if n == 0:
                reason = {"missing": "config missing", "failed": "failed"}.get(row.status, "not run")
                ax.text(
                    0.02,
                    position,
                    reason,
                    va="center",
                    ha="left",
                    fontsize=7,
                    color=_MISSING_COLOUR,
                    transform=ax.get_yaxis_transform(),
                )
                continue
            colour = _BASELINE_COLOUR if row is baseline else _ROW_COLOUR
            ax.errorbar([centre], [position], xerr=[0.0 if n < 2 else spread], fmt="o", color=colour, capsize=3)
            if row is baseline:
                ax.axvline(centre, color=_BASELINE_COLOUR, linestyle="--", linewidth=0.8)
            elif baseline is not None and compare(row, baseline, metric).significant(alpha):
                ax.annotate("†", (centre, position), xytext=(0, 4), textcoords="offset points", ha="center", fontsize=9)
        ax.set_yticks(positions, labels=names if index % columns == 0 else [""] * len(names), fontsize=7)
        ax.set_ylim(len(names) - 0.5, -0.5)  # first row on top, as in the table
        title = metric_label(metric) + (" (%)" if scale == 100.0 else "")
        ax.set_title(title + ("" if higher_is_better(metric) else ", lower is better"), fontsize=9)
        ax.tick_params(axis="x", labelsize=7)
        ax.grid(axis="x", linewidth=0.3)
    for index in range(len(table.metrics), lines * columns):
        axes[index // columns][index % columns].set_visible(False)
    figure.suptitle(f"{display_name(table.key)}: {table.title}", fontsize=10)
    figure.savefig(path, dpi=110)
    return path
