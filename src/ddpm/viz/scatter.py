"""Save 2-D point samples as a scatter plot (the swiss roll's equivalent of a sample grid)."""

from __future__ import annotations

from pathlib import Path

from torch import Tensor

from ddpm.viz.figures import new_figure, save_figure
from ddpm.viz.process import draw_scatter, scatter_limit


def save_scatter(points: Tensor, path: str | Path, title: str = "", size_in: float = 4.0) -> Path:
    """Write (N, 2) points as a square scatter plot (PNG, PDF or SVG by suffix)."""
    figure = new_figure(size_in, size_in)
    draw_scatter(figure.add_subplot(), points, title=title, lim=scatter_limit(points))
    return save_figure(figure, path)
