"""Uploaded images and painted masks, checked before any pixel is decoded: a size limit on the bytes, an
allowed list of formats, a limit on the pixels, then fitted to the model's sample shape."""

from __future__ import annotations

import io
import warnings

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from ddpm.data.user_images import image_pixels, to_unit_range

MAX_UPLOAD_BYTES = 1_000_000  # one image or mask upload
MAX_REQUEST_BYTES = 2 * MAX_UPLOAD_BYTES + 100_000  # a whole form: image, mask and fields
MAX_PIXELS = 4096 * 4096  # refused before decoding (decompression bombs)
FORMATS = {"PNG": "PNG", "JPEG": "JPEG", "GIF": "GIF", "BMP": "BMP", "WEBP": "WebP"}
MASK_FILL = 96  # a model pixel is filled when its share of painted canvas is at least this (of 255)


class UploadError(ValueError):
    """An upload the server refuses; its message is shown on the page."""


def open_image(data: bytes, name: str) -> Image.Image:
    """``data`` as a PIL image, refused when too large, not an image, of another format or too many pixels."""
    if len(data) > MAX_UPLOAD_BYTES:
        limit = f"{MAX_UPLOAD_BYTES / 1e6:.0f} MB"
        raise UploadError(f"upload {name!r} is over the {limit} limit; give a smaller image")
    if not data:
        raise UploadError(f"upload {name!r} is empty; give a {', '.join(FORMATS.values())} image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, Image.DecompressionBombWarning, Image.DecompressionBombError, OSError):
        image = None
    if image is None or image.format not in FORMATS:
        raise UploadError(f"upload {name!r} is not an image; give a {', '.join(FORMATS.values())} file")
    if image.width * image.height > MAX_PIXELS:
        raise UploadError(f"upload {name!r} is {image.width}×{image.height} pixels; the limit is 4096×4096")
    try:
        image.load()
    except (OSError, ValueError) as err:
        raise UploadError(f"upload {name!r} is a damaged image ({err})") from None
    return image


def image_tensor(data: bytes, name: str, sample_shape: tuple[int, ...]) -> Tensor:
    """An uploaded image fitted to the model: (1, C, H, W) in [-1, 1] (resized like ``ddpm inpaint``)."""
    return to_unit_range(image_pixels(open_image(data, name), sample_shape))


def mask_tensor(data: bytes, sample_shape: tuple[int, ...]) -> Tensor:
    """A painted mask (white or opaque strokes = fill) → (H, W) bool at the model's size."""
    _, height, width = sample_shape
    image = open_image(data, "mask")
    if image.mode in ("RGBA", "LA") or "transparency" in image.info:
        painted = image.convert("RGBA").getchannel("A")
    else:
        painted = image.convert("L")
    painted = painted.resize((width, height), Image.Resampling.BOX)
    mask = torch.from_numpy(np.asarray(painted) >= MASK_FILL)
    if not mask.any():
        raise UploadError("the mask is empty; paint the part of the image to fill")
    return mask
