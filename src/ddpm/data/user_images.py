"""Images and masks a user hands to a command (``ddpm invert/interpolate/inpaint``), fitted to a model's
sample shape: image files or samples .npz files → (N, C, H, W) in [-1, 1]; mask images or named regions."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
NAMED_MASKS = ("top", "bottom", "left", "right", "center")  # the half (or central square) to fill


def load_images(paths: Sequence[str | Path], sample_shape: tuple[int, ...]) -> Tensor:
    """Image files (resized to the model's size) and/or samples .npz files → (N, C, H, W) in [-1, 1]."""
    channels, height, width = sample_shape
    batches = []
    for path in map(Path, paths):
        if not path.is_file():
            raise ValueError(f"image {str(path)!r} does not exist")
        if path.suffix.lower() == ".npz":
            with np.load(path, allow_pickle=False) as data:
                if "images" not in data:
                    raise ValueError(
                        f"{str(path)!r} has no 'images' array; give a samples .npz or image files"
                    )
                pixels = data["images"]  # (N, H, W, C) uint8
            if pixels.ndim != 4 or pixels.shape[1:] != (height, width, channels):
                raise ValueError(
                    f"{str(path)!r} holds images of shape {pixels.shape[1:]}; the model needs "
                    f"{(height, width, channels)} (H, W, C)"
                )
        elif path.suffix.lower() in IMAGE_SUFFIXES:
            with Image.open(path) as image:
                pixels = image_pixels(image, sample_shape)
        else:
            raise ValueError(f"image {str(path)!r} must be .npz or one of {', '.join(IMAGE_SUFFIXES)}")
        batches.append(to_unit_range(pixels))
    if not batches:
        raise ValueError("no images given")
    return torch.cat(batches)


def image_pixels(image: Image.Image, sample_shape: tuple[int, ...]) -> np.ndarray:
    """One opened image fitted to the model: (1, H, W, C) uint8, its colour mode converted (gray for C = 1,
    else RGB) and resized (bicubic) when its size differs. ``ddpm serve``'s uploads use it too."""
    channels, height, width = sample_shape
    image = image.convert("L" if channels == 1 else "RGB")
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.BICUBIC)
    return np.asarray(image).reshape(1, height, width, channels)


def to_unit_range(pixels: np.ndarray) -> Tensor:
    """uint8 (N, H, W, C) → float (N, C, H, W) in [-1, 1]."""
    return torch.from_numpy(pixels.copy()).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def load_mask(spec: str | Path, sample_shape: tuple[int, ...]) -> Tensor:
    """(H, W) bool, True where to generate: a mask image (white = fill, resized) or a named region."""
    _, height, width = sample_shape
    if str(spec) in NAMED_MASKS:
        mask = torch.zeros(height, width, dtype=torch.bool)
        region = {
            "top": (slice(0, height // 2), slice(None)),
            "bottom": (slice(height // 2, None), slice(None)),
            "left": (slice(None), slice(0, width // 2)),
            "right": (slice(None), slice(width // 2, None)),
            "center": (slice(height // 4, height - height // 4), slice(width // 4, width - width // 4)),
        }[str(spec)]
        mask[region] = True
        return mask
    path = Path(spec)
    if not path.is_file():
        raise ValueError(f"--mask {str(spec)!r} is neither a file nor one of {', '.join(NAMED_MASKS)}")
    with Image.open(path) as image:
        image = image.convert("L").resize((width, height), Image.Resampling.NEAREST)
        return torch.from_numpy(np.asarray(image) >= 128)
