"""Save 2-D point samples as a scatter plot (the swiss roll's equivalent of a sample grid)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from torch import Tensor

from ddpm.viz.process import draw_scatter, scatter_limit


def save_scatter(points: Tensor, path: str | Path, title: str = "", size_in: float = 4.0) -> Path:
    """Write (N, 2) points as a square PNG scatter plot."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure, ax = plt.subplots(figsize=(size_in, size_in), dpi=100)
    draw_scatter(ax, points, title=title, lim=scatter_limit(points))
    figure.savefig(path, bbox_inches="tight")
    plt.close(figure)
    return path
