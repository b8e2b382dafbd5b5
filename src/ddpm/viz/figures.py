"""Matplotlib figures without pyplot: no global state, no GUI backend, safe in workers and tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

FIGURE_DPI = 100  # pixels per inch of PNG figures (a 6.4″ × 4.8″ figure is 640 × 480 px)
FIGURE_FORMATS = ("png", "pdf", "svg")


def new_figure(width_in: float, height_in: float, dpi: float = FIGURE_DPI) -> Figure:
    """A blank figure of the given size (inches) that renders with Agg."""
    fig = Figure(figsize=(width_in, height_in), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def figure_to_array(fig: Figure) -> np.ndarray:
    """Render ``fig`` at its own dpi to uint8 RGB pixels (H, W, 3)."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def save_figure(fig: Figure, path: str | Path, dpi: float | None = None) -> Path:
    """Save ``fig`` as PNG, PDF or SVG, chosen by the suffix of ``path``."""
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in FIGURE_FORMATS:
        raise ValueError(f"cannot save a figure as {path.name!r}; allowed suffixes: .png, .pdf, .svg")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format=fmt, dpi=fig.dpi if dpi is None else dpi)
    return path
