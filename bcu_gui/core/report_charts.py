"""The report's charts as PNG bytes, drawn with matplotlib's Agg backend (no display, no pyplot state).

PNG rather than SVG: an SVG from matplotlib carries text a browser parses (and a link to matplotlib's site in
its metadata); a PNG is inert bytes inside a ``data:`` URI. Every label drawn here is our own wording or a
number: names from a run folder (untrusted) are never handed to matplotlib, whose mathtext would parse them.
"""

from __future__ import annotations

import io
import math
from typing import Sequence

Series = Sequence[float | None]

# the app's colours (plots.py) so a report reads like the window it came from
BLUE, RED, ORANGE, GREY, GREEN = "#1f77b4", "#d62728", "#ff7f0e", "#7f7f7f", "#2ca02c"
WIDTH_IN, HEIGHT_IN, DPI = 5.0, 3.3, 110  # two charts side by side fill the page's width


def _figure(height: float = HEIGHT_IN, width: float = WIDTH_IN):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})  # no tool name or URL inside the file
    return buffer.getvalue()


def _finite(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _points(xs: Sequence[int], ys: Series) -> tuple[list[int], list[float]]:
    pairs = [(x, _finite(y)) for x, y in zip(xs, ys)]
    kept = [(x, y) for x, y in pairs if y is not None]
    return [x for x, _ in kept], [y for _, y in kept]


def _style(ax, xlabel: str, ylabel: str, integer_x: bool = True) -> None:
    from matplotlib.ticker import MaxNLocator

    if integer_x:  # epochs are whole numbers: no tick at 1.25
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def loss_chart(epochs: Sequence[int], loss: Series) -> bytes:
    """Distillation loss per epoch."""
    fig = _figure()
    ax = fig.add_subplot()
    xs, ys = _points(epochs, loss)
    ax.plot(xs, ys, color=BLUE, marker="o" if len(xs) <= 30 else None, markersize=3, label="loss")
    _style(ax, "epoch", "distillation loss")
    ax.set_title("Loss", loc="left", fontsize=11)
    return _png(fig)


def rates_chart(epochs: Sequence[int], series: dict[str, tuple[Series, str, str]],
                references: dict[str, tuple[float | None, str, str]]) -> bytes:
    """Rates (ACC, ASR, proxy ASR, ...) per epoch on a 0-100 % axis, with the teacher's values as flat lines.

    ``series``: label -> (values, colour, line style); ``references``: label -> (value, colour, line style).
    """
    from matplotlib.ticker import PercentFormatter

    fig = _figure(height=HEIGHT_IN + 0.6)  # room for the legend below
    ax = fig.add_subplot()
    few = len(epochs) <= 30
    for label, (values, colour, style) in series.items():
        xs, ys = _points(epochs, values)
        if xs:
            thin = label == "agreement"  # a backdrop for ACC, which it follows closely
            ax.plot(xs, ys, color=colour, linestyle=style, marker="o" if few and not thin else None, markersize=3,
                    linewidth=1.0 if thin else 1.6, alpha=0.7 if thin else 1.0, label=label)
    for label, (value, colour, style) in references.items():
        value = _finite(value)
        if value is not None:
            ax.axhline(value, color=colour, linestyle=style, linewidth=1, alpha=0.8, label=label)
    ax.set_ylim(-0.03, 1.03)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    _style(ax, "epoch", "rate")
    ax.set_title("Accuracy and attack success", loc="left", fontsize=11)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncols=3, fontsize=7.5, frameon=False)
    return _png(fig)


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both low ASR (x) and high ACC (y), by rising ASR."""
    front = []
    for i, (x, y) in enumerate(points):
        dominated = any((ox <= x and oy >= y) and (ox < x or oy > y) for j, (ox, oy) in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: (points[i][0], -points[i][1]))


def sweep_scatter(points: Sequence[tuple[float, float]], numbers: Sequence[int], x_label: str,
                  teacher: tuple[float, float] | None = None) -> bytes:
    """Final ACC (y) against ASR or proxy ASR (x) of every run, numbered as in the report's table, with the
    Pareto front (lowest ASR for its ACC) drawn as a line through its points."""
    from matplotlib.ticker import PercentFormatter

    fig = _figure(height=4.2, width=7.5)
    ax = fig.add_subplot()
    front = pareto_front(points)
    on_front = set(front)
    others = [p for i, p in enumerate(points) if i not in on_front]
    if others:
        ax.scatter([p[0] for p in others], [p[1] for p in others], color=GREY, s=28, label="run")
    if front:
        ax.plot([points[i][0] for i in front], [points[i][1] for i in front], color=GREEN, linewidth=1,
                marker="o", markersize=6, label="Pareto front")
    for number, (x, y) in zip(numbers, points):
        ax.annotate(str(number), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    if teacher is not None:
        ax.scatter([teacher[0]], [teacher[1]], marker="*", s=120, color=RED, label="teacher")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(PercentFormatter(1.0))
    ax.set_xlim(-0.03, 1.03)
    _style(ax, x_label + " (lower is better)", "ACC (higher is better)", integer_x=False)
    ax.set_title("Final ACC against " + x_label, loc="left", fontsize=11)
    ax.legend(loc="lower left", fontsize=8)
    return _png(fig)
