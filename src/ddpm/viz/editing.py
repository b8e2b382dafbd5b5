"""Pictures of conditional generation and editing: class-by-seed grids, guidance sweeps, interpolation
strips, inpainting before/after, a ControlNet's controls above its samples and the real images (the tensors
come from ``ddpm.editing``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from matplotlib.figure import Figure
from torch import Tensor

from ddpm.viz.process import image_table, table_figure


def class_grid_figure(images: Tensor, labels: Tensor, n_per_class: int, *, cell_in: float = 0.6) -> Figure:
    """Class-by-seed grid from :func:`sample_classes`: one row per class, one column per seed."""
    cells = images.reshape(-1, n_per_class, *images.shape[1:])  # (K, n, C, H, W)
    row_labels = [str(int(k)) for k in labels[::n_per_class]]
    return table_figure(image_table(cells, [], row_labels, scale=legible_scale(images)), cell_in=cell_in)


def guidance_sweep_figure(sweep: Tensor, scales: Sequence[float], *, cell_in: float = 0.6) -> Figure:
    """Rows of :func:`guidance_sweep` (same noises, one row per guidance scale s)."""
    row_labels = [f"s={s:g}" for s in scales]
    return table_figure(image_table(sweep, [], row_labels, scale=legible_scale(sweep[0])), cell_in=cell_in)


def interpolation_figure(strips: Tensor, *, cell_in: float = 0.6) -> Figure:
    """Interpolation strips (num, C, H, W) or (rows, num, C, H, W), columns labelled by their weight."""
    strips = strips.unsqueeze(0) if strips.ndim == 4 else strips
    num = strips.shape[1]
    col_labels = [f"{i / (num - 1):.2f}" for i in range(num)]  # the weights of editing.interpolation_weights
    return table_figure(image_table(strips, col_labels, scale=legible_scale(strips[0])), cell_in=cell_in)


def inpainting_figure(images: Tensor, mask: Tensor, results: Tensor, *, cell_in: float = 0.8) -> Figure:
    """Before/after: one row per image with the input, the input with the hole shown grey, the result."""
    images = images.cpu()
    mask = mask.cpu().expand(images.shape).bool()
    holed = torch.where(mask, torch.zeros_like(images), images)  # the region to fill in mid-grey
    cells = torch.stack([images, holed, results.cpu()], dim=1)  # (N, 3, C, H, W)
    table = image_table(cells, ["input", "masked", "inpainted"], scale=legible_scale(images))
    return table_figure(table, cell_in=cell_in)


def reconstruction_figure(originals: Tensor, rebuilt: Tensor, *, cell_in: float = 0.6) -> Figure:
    """Inputs (N, C, H, W) above their DDIM reconstructions, one column per image."""
    table = image_table(
        torch.stack([originals, rebuilt]), [], ["input", "DDIM"], scale=legible_scale(originals)
    )
    return table_figure(table, cell_in=cell_in)


CONTROL_ROW_LABELS = ("control", "samples", "real")


def control_cells(controls: Tensor, samples: Tensor, real: Tensor) -> Tensor:
    """(3, N, C, H, W): a ControlNet's controls, the samples drawn with them and the real images they came
    from, one column each; single-channel controls of colour images are shown in gray."""
    samples, real, controls = samples.cpu(), real.cpu(), controls.cpu()
    if controls.shape[1] != samples.shape[1]:
        controls = controls.expand(-1, samples.shape[1], -1, -1)
    return torch.stack([controls, samples, real])


def control_figure(controls: Tensor, samples: Tensor, real: Tensor, *, cell_in: float = 0.6) -> Figure:
    """Rows control | samples | real image (:func:`control_cells`), one column per control."""
    cells = control_cells(controls, samples, real)
    return table_figure(
        image_table(cells, [], CONTROL_ROW_LABELS, scale=legible_scale(real)), cell_in=cell_in
    )


def legible_scale(images: Tensor) -> int:
    """Upscale small images (8×8 digits) so that labels and pixels are both legible."""
    return max(1, 32 // images.shape[-1])
