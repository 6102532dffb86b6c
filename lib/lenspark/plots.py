"""PNG plots rendered with matplotlib's Agg backend, returned as bytes for any storage."""

from __future__ import annotations

import io
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def _to_png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    return buffer.getvalue()


def bar_chart(
    labels: Sequence[str],
    values: Sequence[float],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
) -> bytes:
    """Render a bar chart with one bar per label."""
    figure, axes = plt.subplots(figsize=(8, 4.5))
    axes.bar(range(len(values)), values, color="#3b6ea5")
    axes.set_xticks(range(len(labels)), labels, rotation=45 if len(labels) > 12 else 0)
    axes.set_title(title)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.grid(axis="y", alpha=0.3)
    return _to_png(figure)


def line_chart(
    series: dict[str, Sequence[float]],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    x: Sequence[float] | None = None,
) -> bytes:
    """Render one line per named series against ``x`` (default 1, 2, ...)."""
    figure, axes = plt.subplots(figsize=(8, 4.5))
    for name, values in series.items():
        xs = list(x) if x is not None else list(range(1, len(values) + 1))
        axes.plot(xs, values, marker="o", markersize=3, label=name)
    axes.set_title(title)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.grid(alpha=0.3)
    axes.legend()
    return _to_png(figure)
