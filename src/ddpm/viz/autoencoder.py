"""Pictures of latent diffusion's first stage (Rombach et al. 2022, Fig. 3 and appendix): an autoencoder's
reconstructions beside the originals, and the channels of its normalised latents as heat maps.

Images are (N, C, H, W) in [-1, 1] as everywhere in ``ddpm.viz`` and are shown as pixels in [0, 1]
(clipped); latents are (N, c, h, w) in the normalised units diffusion runs in (``LatentCodec.encode``).
"""

from __future__ import annotations

import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import Tensor

from ddpm.viz.editing import legible_scale
from ddpm.viz.figures import new_figure
from ddpm.viz.grid import check_images
from ddpm.viz.process import ImageTable, image_table, table_figure

RECONSTRUCTION_ROW_LABELS = ("original", "reconstruction")
LATENT_COLORMAP = "RdBu_r"  # diverging: normalised latents centre on 0, so sign and size both show


def reconstruction_pairs_table(
    originals: Tensor, rebuilt: Tensor, *, columns: int = 8, scale: int = 1
) -> ImageTable:
    """Pairs of rows, originals above their reconstructions, ``columns`` images per row: image i sits in
    pair i // columns, column i % columns. A last pair that is not full is left out (N ≥ ``columns``)."""
    originals, rebuilt = check_images(originals, "originals"), check_images(rebuilt, "reconstructions")
    if originals.shape != rebuilt.shape:
        raise ValueError(f"reconstructions have shape {tuple(rebuilt.shape)}; the originals "
                         f"{tuple(originals.shape)}: give one reconstruction per original")  # fmt: skip
    columns = min(columns, originals.shape[0])
    pairs = originals.shape[0] // columns
    shape = (pairs, columns, *originals.shape[1:])
    top, bottom = originals[: pairs * columns].reshape(shape), rebuilt[: pairs * columns].reshape(shape)
    cells = torch.stack([top, bottom], dim=1).flatten(0, 1)  # (2 · pairs, columns, C, H, W)
    return image_table(cells.clamp(-1, 1), [], RECONSTRUCTION_ROW_LABELS * pairs, scale=scale)


def reconstruction_pairs_figure(
    originals: Tensor, rebuilt: Tensor, *, columns: int = 8, cell_in: float = 0.6
) -> Figure:
    """:func:`reconstruction_pairs_table` as a labelled figure (small images are upscaled, so 8×8 digits stay
    legible beside their labels)."""
    return table_figure(
        reconstruction_pairs_table(originals, rebuilt, columns=columns, scale=legible_scale(originals)),
        cell_in=cell_in,
    )


def latent_limit(latents: Tensor, quantile: float = 0.995) -> float:
    """The half-width of the one colour scale all heat maps share: the ``quantile`` of |z| over every
    latent shown, so one outlier does not wash the rest out (values beyond it take the end colours)."""
    return max(float(latents.detach().abs().float().flatten().quantile(quantile)), 1e-6)


def latent_channels_figure(
    images: Tensor, latents: Tensor, *, cell_in: float = 0.9, title: str = "normalised latents"
) -> Figure:
    """One row per image: the image, then each of its latent channels as a heat map on one shared,
    symmetric colour scale (:func:`latent_limit`), with a colourbar. Panels: N · (1 + c) and the bar."""
    images = check_images(images, "images")
    latents = torch.as_tensor(latents).detach().to("cpu", torch.float32)
    if latents.ndim != 4 or latents.shape[0] != images.shape[0]:
        raise ValueError(f"latents must be (N, c, h, w) with N = {images.shape[0]} (one per image), got "
                         f"shape {tuple(latents.shape)}")  # fmt: skip
    rows, channels = images.shape[0], latents.shape[1]
    limit = latent_limit(latents)
    panels_w, panels_h = cell_in * (1 + channels), cell_in * rows  # inches
    width, height = max(panels_w, 2.6) + 0.9, panels_h + 0.75  # room for the colourbar and the titles
    fig = new_figure(width, height)
    fig.subplots_adjust(left=0.05 / width, right=(0.05 + panels_w) / width, bottom=0.05 / height,
                        top=(0.05 + panels_h) / height, wspace=0.1, hspace=0.1)  # fmt: skip
    axes = fig.subplots(rows, 1 + channels, squeeze=False)
    for i in range(rows):
        _show_image(axes[i, 0], images[i])
        for c in range(channels):
            heat = axes[i, 1 + c].imshow(latents[i, c].numpy(), cmap=LATENT_COLORMAP, vmin=-limit, vmax=limit,
                                         interpolation="nearest")  # fmt: skip
            axes[i, 1 + c].set_axis_off()
    axes[0, 0].set_title("image", fontsize=8)
    for c in range(channels):
        axes[0, 1 + c].set_title(f"z{_subscript(c)}", fontsize=8)
    shape = "×".join(map(str, latents.shape[1:]))
    fig.text(0.05 / width, 1 - 0.08 / height, f"{title}\n{shape} per image, one colour scale", fontsize=8,
             va="top")  # fmt: skip
    bar = fig.add_axes(((0.2 + panels_w) / width, 0.05 / height, 0.12 / width, panels_h / height))
    fig.colorbar(heat, cax=bar)
    return fig


def _show_image(ax: Axes, image: Tensor) -> None:
    pixels = ((image.clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy()  # (H, W, C) in [0, 1]
    gray = pixels.shape[-1] == 1
    ax.imshow(pixels[..., 0] if gray else pixels, cmap="gray" if gray else None, vmin=0, vmax=1,
              interpolation="nearest")  # fmt: skip
    ax.set_axis_off()


def _subscript(number: int) -> str:
    return str(number).translate(str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉"))
