"""Forward and reverse process strips (DDPM §2, Fig. 2): images or 2-D points at chosen timesteps.

Labels use the paper's step numbers: "t = 0" is x₀ itself and "t = T" is index T − 1; a recorded
sampler step with 0-based index ``t`` holds the paper's x_{t+1} and is labelled ``t + 1``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import Tensor

from ddpm.diffusion import NoiseSchedule
from ddpm.viz.figures import new_figure
from ddpm.viz.grid import check_images, make_grid, upscale_nearest

DEFAULT_FORWARD_STEPS = (0, 50, 100, 250, 500, 750, 1000)  # paper steps shown for T = 1000
REVERSE_ROW_LABELS = ("xₜ", "x̂₀")  # the noisy state and the network's prediction of x₀
MAX_STRIP_COLUMNS = 7  # reverse strips show at most this many of the recorded steps


class TrajectoryLike(Protocol):
    """One recorded sampler step: 0-based index ``t``, state ``x_t`` and predicted ``x0_pred``."""

    t: int
    x_t: Tensor
    x0_pred: Tensor


def is_points(x: Tensor | np.ndarray) -> bool:
    """True for 2-D point sets (N, 2); False for anything else (images are (N, C, H, W))."""
    return x.ndim == 2 and x.shape[1] == 2


def default_forward_steps(num_steps: int) -> tuple[int, ...]:
    """``DEFAULT_FORWARD_STEPS`` rescaled from T = 1000 to ``num_steps`` (duplicates dropped)."""
    return tuple(dict.fromkeys(round(s * num_steps / 1000) for s in DEFAULT_FORWARD_STEPS))


def forward_trajectory(
    x0: Tensor,
    schedule: NoiseSchedule,
    steps: Sequence[int] = DEFAULT_FORWARD_STEPS,
    *,
    generator: torch.Generator | None = None,
) -> list[Tensor]:
    """One draw of the forward chain at ``steps`` (paper steps, 0 = x₀ itself).

    Runs q(x_t | x_{t−1}) = N(√(1−β_t) x_{t−1}, β_t I) step by step (DDPM eq. 2), so the columns are
    one noising path of the same images; each is distributed as q(x_t | x₀) of eq. 4. ``generator``
    (a CPU ``torch.Generator``) defaults to one seeded with 0, so strips are reproducible.
    """
    steps = list(steps)
    if not steps:
        raise ValueError("steps is empty; give at least one timestep in 0..T")
    for s in steps:
        if not isinstance(s, (int, np.integer)) or not 0 <= s <= schedule.num_steps:
            raise ValueError(f"step {s!r} is outside 0..{schedule.num_steps} (0 = x₀, T = fully noised)")
    generator = torch.Generator().manual_seed(0) if generator is None else generator
    x = torch.as_tensor(x0).detach().to("cpu", torch.float32)
    betas = schedule.betas.to(torch.float32)
    wanted, states = set(steps), {0: x.clone()}
    for t in range(1, max(steps) + 1):  # paper step t uses β at index t − 1
        noise = torch.randn(x.shape, generator=generator)
        x = (1 - betas[t - 1]).sqrt() * x + betas[t - 1].sqrt() * noise
        if t in wanted:
            states[t] = x.clone()
    return [states[s] for s in steps]


def select_steps(trajectory: Sequence[TrajectoryLike], max_columns: int = MAX_STRIP_COLUMNS) -> list:
    """At most ``max_columns`` recorded steps, evenly spaced, always keeping the first and the last."""
    if not trajectory:
        raise ValueError("trajectory is empty; record at least one sampler step")
    if max_columns < 1:
        raise ValueError(f"max_columns={max_columns} must be ≥ 1")
    if len(trajectory) <= max_columns:
        return list(trajectory)
    picks = np.unique(np.linspace(0, len(trajectory) - 1, max_columns).round().astype(int))
    return [trajectory[i] for i in picks]


@dataclass(frozen=True)
class ImageTable:
    """Images tiled in rows × columns, with the pixel centres of each row and column for labels."""

    pixels: np.ndarray  # uint8 (H, W, C), already upscaled
    col_centers: tuple[float, ...]
    row_centers: tuple[float, ...]
    col_labels: tuple[str, ...]
    row_labels: tuple[str, ...]

    def upscaled(self, scale: int) -> ImageTable:
        """The same table with every pixel repeated ``scale``×``scale`` times."""
        return ImageTable(
            pixels=upscale_nearest(self.pixels, scale),
            col_centers=tuple((c + 0.5) * scale - 0.5 for c in self.col_centers),
            row_centers=tuple((c + 0.5) * scale - 0.5 for c in self.row_centers),
            col_labels=self.col_labels,
            row_labels=self.row_labels,
        )


def image_table(
    cells: Tensor,
    col_labels: Sequence[str] = (),
    row_labels: Sequence[str] = (),
    padding: int = 1,
    scale: int = 1,
) -> ImageTable:
    """Tile ``cells`` (R, K, C, H, W) in [-1, 1] into one picture; ``scale`` upscales by repetition."""
    if cells.ndim != 5:
        raise ValueError(f"cells must be (rows, columns, C, H, W), got shape {tuple(cells.shape)}")
    rows, cols, c, h, w = cells.shape
    pixels = upscale_nearest(
        make_grid(cells.reshape(rows * cols, c, h, w), nrow=cols, padding=padding), scale
    )
    return ImageTable(
        pixels=pixels,
        col_centers=tuple(scale * (padding + w / 2 + i * (w + padding)) - 0.5 for i in range(cols)),
        row_centers=tuple(scale * (padding + h / 2 + i * (h + padding)) - 0.5 for i in range(rows)),
        col_labels=tuple(col_labels),
        row_labels=tuple(row_labels),
    )


def draw_image_table(ax: Axes, table: ImageTable) -> None:
    """Show an :class:`ImageTable` without resampling blur, labels on top and on the left."""
    gray = table.pixels.shape[-1] == 1
    pixels = table.pixels[..., 0] if gray else table.pixels
    ax.imshow(pixels, cmap="gray" if gray else None, vmin=0, vmax=255, interpolation="none")
    ax.set_xticks(table.col_centers[: len(table.col_labels)], table.col_labels)
    ax.set_yticks(table.row_centers[: len(table.row_labels)], table.row_labels)
    ax.xaxis.tick_top()
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)


def draw_scatter(
    ax: Axes, points: Tensor, title: str = "", lim: float = 3.5, marker_size: float = 2.0
) -> None:
    """A square scatter plot of (N, 2) points within ±``lim``."""
    xy = torch.as_tensor(points).detach().cpu().float().numpy()
    ax.scatter(xy[:, 0], xy[:, 1], s=marker_size, color="C0", alpha=0.6, linewidths=0)
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title)


def scatter_limit(*point_sets: Tensor, floor: float = 3.5) -> float:
    """Axis half-width that holds the bulk (99.5 %) of every set, at least ``floor`` (the default fits
    ±3.5σ of the N(0, I) end of the chain; use 0 for data alone)."""
    bulk = [float(torch.as_tensor(p).abs().float().quantile(0.995)) for p in point_sets]
    return max(floor, 1.15 * max(bulk))


def forward_table(
    x0: Tensor,
    schedule: NoiseSchedule,
    steps: Sequence[int],
    *,
    generator: torch.Generator | None = None,
    scale: int = 1,
    decode: Callable[[Tensor], Tensor] | None = None,
) -> ImageTable:
    """Images (rows) noised to ``steps`` (columns) as an :class:`ImageTable`. With ``decode``, ``x0`` are a
    latent model's latents, noised where its diffusion runs, and each state is shown decoded (LDM §3)."""
    x0 = check_images(x0, "x0") if decode is None else torch.as_tensor(x0).detach().cpu()
    states = forward_trajectory(x0, schedule, steps, generator=generator)
    if decode is not None:
        states = [check_images(decode(state), "decoded x_t") for state in states]
    cells = torch.stack(states, dim=1)  # (N, K, C, H, W)
    return image_table(cells, [f"t = {s}" for s in steps], scale=scale)


def reverse_table(trajectory: Sequence[TrajectoryLike], max_images: int = 1, scale: int = 1) -> ImageTable:
    """For each of the first ``max_images`` samples: a row of x_t and a row of x̂₀ at the recorded steps."""
    rows = []
    for i in range(max_images):
        rows.append(torch.stack([check_images(s.x_t, "x_t")[i] for s in trajectory]))
        rows.append(torch.stack([check_images(s.x0_pred, "x0_pred")[i].clamp(-1, 1) for s in trajectory]))
    cells = torch.stack(rows)  # (2 · max_images, K, C, H, W)
    return image_table(
        cells, [f"t = {s.t + 1}" for s in trajectory], REVERSE_ROW_LABELS * max_images, scale=scale
    )


def table_figure(table: ImageTable, cell_in: float = 1.0, dpi: float = 100) -> Figure:
    """A figure sized so each image is about ``cell_in`` inches, with room for the labels."""
    h, w = table.pixels.shape[:2]
    cols = max(len(table.col_centers), 1)
    img_w = cell_in * cols
    img_h = img_w * h / w
    # room for the longest row label (about 0.07 inch per character at the labels' font size)
    left = 0.15 + 0.07 * max(len(label) for label in table.row_labels) if table.row_labels else 0.05
    top = 0.35 if table.col_labels else 0.05
    fig = new_figure(img_w + left + 0.05, img_h + top + 0.05, dpi=dpi)
    fw, fh = fig.get_size_inches()
    ax = fig.add_axes((left / fw, 0.05 / fh, img_w / fw, img_h / fh))
    draw_image_table(ax, table)
    return fig


def forward_strip(
    x0: Tensor,
    schedule: NoiseSchedule,
    steps: Sequence[int] = DEFAULT_FORWARD_STEPS,
    *,
    generator: torch.Generator | None = None,
    max_images: int = 4,
    max_points: int = 1000,
    decode: Callable[[Tensor], Tensor] | None = None,
) -> Figure:
    """The forward process as a figure: images dissolving into noise, or a row of 2-D scatter plots.

    ``x0`` is (N, C, H, W) images in [-1, 1] (the first ``max_images`` are shown, one per row) or
    (N, 2) points (the first ``max_points``, one scatter plot per step); or, with ``decode`` (latents →
    images), a latent model's latents, whose noised states are shown decoded.
    """
    if is_points(x0):
        states = forward_trajectory(x0[:max_points], schedule, steps, generator=generator)
        fig = new_figure(2.2 * len(states), 2.5)
        axes = fig.subplots(1, len(states), squeeze=False)[0]
        lim = scatter_limit(*states)
        for ax, s, x in zip(axes, steps, states, strict=True):
            draw_scatter(ax, x, f"t = {s}", lim)
        return fig
    return table_figure(forward_table(x0[:max_images], schedule, steps, generator=generator, decode=decode))


def reverse_strip(
    trajectory: Sequence[TrajectoryLike],
    *,
    max_columns: int = MAX_STRIP_COLUMNS,
    max_images: int = 2,
    max_points: int = 1000,
) -> Figure:
    """The reverse process as a figure: x_t above the predicted x̂₀ at (up to ``max_columns``) steps.

    For images, each of the first ``max_images`` samples gets the two rows; for 2-D points the two
    rows are scatter plots of the first ``max_points`` points.
    """
    steps = select_steps(trajectory, max_columns)
    if is_points(steps[0].x_t):
        fig = new_figure(2.2 * len(steps), 4.8)
        axes = fig.subplots(2, len(steps), squeeze=False)
        lim = scatter_limit(steps[-1].x_t[:max_points], steps[-1].x0_pred[:max_points])
        for k, step in enumerate(steps):
            draw_scatter(axes[0, k], step.x_t[:max_points], f"t = {step.t + 1}", lim)
            draw_scatter(axes[1, k], step.x0_pred[:max_points], "", lim)
        axes[0, 0].set_ylabel(REVERSE_ROW_LABELS[0])
        axes[1, 0].set_ylabel(REVERSE_ROW_LABELS[1])
        return fig
    max_images = min(max_images, check_images(steps[0].x_t, "x_t").shape[0])
    return table_figure(reverse_table(steps, max_images))
