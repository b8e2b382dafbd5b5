"""Image grids: [-1, 1] tensors → uint8 pixels, tiled, upscaled without blur."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

MIN_SAVED_GRID_PX = 256  # save_grid upscales small grids until their long side reaches this


def check_images(images: Tensor | np.ndarray, name: str = "images") -> Tensor:
    """``images`` as a float CPU tensor (N, C, H, W) with C ∈ {1, 3}; ValueError otherwise."""
    images = torch.as_tensor(images)
    if images.ndim != 4 or images.shape[1] not in (1, 3) or images.shape[0] < 1:
        shape = tuple(images.shape)
        raise ValueError(f"{name} must be (N, C, H, W) with N ≥ 1 and C = 1 or 3, got shape {shape}")
    return images.detach().to("cpu", torch.float32)


def to_uint8(images: Tensor | np.ndarray) -> np.ndarray:
    """[-1, 1] floats → uint8 in [0, 255] (values outside are clipped); layout is kept."""
    x = torch.as_tensor(images).detach().to("cpu", torch.float32)
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()


def make_grid(
    images: Tensor | np.ndarray, nrow: int | None = None, padding: int = 2, pad_value: float = 1.0
) -> np.ndarray:
    """Tile (N, C, H, W) images in [-1, 1] into one uint8 (H', W', C) array, ``nrow`` images per row.

    ``nrow`` defaults to ⌈√N⌉ (a square-ish grid); ``pad_value`` is in [-1, 1] (1 = white borders).
    """
    images = check_images(images)
    n, c, h, w = images.shape
    nrow = math.ceil(math.sqrt(n)) if nrow is None else nrow
    if nrow < 1:
        raise ValueError(f"nrow={nrow} must be ≥ 1")
    if padding < 0:
        raise ValueError(f"padding={padding} must be ≥ 0")
    ncol_images, nrows = min(nrow, n), math.ceil(n / nrow)
    grid = torch.full(
        (c, nrows * (h + padding) + padding, ncol_images * (w + padding) + padding), float(pad_value)
    )  # (C, H', W')
    for i in range(n):
        row, col = divmod(i, nrow)
        top, left = padding + row * (h + padding), padding + col * (w + padding)
        grid[:, top : top + h, left : left + w] = images[i]
    return to_uint8(grid).transpose(1, 2, 0)  # (H', W', C)


def upscale_nearest(pixels: np.ndarray, scale: int) -> np.ndarray:
    """Repeat every pixel ``scale``×``scale`` times (nearest neighbour: no blur on 8×8 digits)."""
    if not isinstance(scale, (int, np.integer)) or scale < 1:
        raise ValueError(f"scale={scale!r} must be an integer ≥ 1")
    return pixels.repeat(scale, axis=0).repeat(scale, axis=1)


def scale_for(pixels: np.ndarray, min_px: int = MIN_SAVED_GRID_PX) -> int:
    """The smallest integer upscale that brings the long side of ``pixels`` to ``min_px``."""
    return max(1, math.ceil(min_px / max(pixels.shape[:2])))


def to_pil(pixels: np.ndarray) -> Image.Image:
    """uint8 (H, W, C) with C ∈ {1, 3} → a PIL image (mode L or RGB)."""
    return Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)


def save_grid(
    images: Tensor | np.ndarray,
    path: str | Path,
    nrow: int | None = None,
    scale: int | None = None,
    padding: int = 2,
) -> Path:
    """Save a grid of (N, C, H, W) images in [-1, 1] as PNG (or any format Pillow knows by suffix).

    ``scale`` upscales with nearest neighbour; by default it is the smallest integer that makes the
    grid's long side at least ``MIN_SAVED_GRID_PX`` pixels.
    """
    pixels = make_grid(images, nrow=nrow, padding=padding)
    pixels = upscale_nearest(pixels, scale_for(pixels) if scale is None else scale)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    to_pil(pixels).save(path)
    return path
