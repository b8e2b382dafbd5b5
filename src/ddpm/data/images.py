"""Decode one image file, or conform a stack of images, to a fixed size and channel count.

Both paths share one resize (shorter side to ``size``, bicubic with antialiasing, then a centre
crop) and one grey conversion (ITU-R 601-2 luma, as PIL's "L"), so a data set gives the same
pixels whether it comes from arrays or from image files.

A file is refused (:class:`ImageRefused`, with a one-line reason) before its pixels are decoded
when its header claims more than ``MAX_IMAGE_PIXELS`` pixels (a decompression bomb), a shorter side
under ``MIN_SIDE_PX`` or an aspect ratio over ``MAX_ASPECT_RATIO``: so the memory one image can take
is bounded whatever the file claims.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import ExifTags, Image, ImageOps

HIGH_BIT_GREY = ("I;16", "I;16L", "I;16B", "I;16N", "I")
ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
MAX_IMAGE_PIXELS = 89_478_485  # PIL's own decompression-bomb threshold (≈ 256 MiB of RGB), as a constant
MIN_SIDE_PX = 8  # a shorter side below min(this, size) is not a picture worth upscaling (1×1 trackers)
MAX_ASPECT_RATIO = 8  # longer / shorter side; beyond it a centre crop keeps a sliver and the resize a strip


class ImageRefused(ValueError):
    """An image file that is readable but not usable as a training image; the message says why."""


def resize_center_crop(image: Image.Image, size: int) -> Image.Image:
    """Scale so the shorter side is ``size`` (bicubic; PIL antialiases when shrinking), crop the centre."""
    width, height = image.size
    if (width, height) == (size, size):
        return image
    scale = size / min(width, height)
    new_width, new_height = max(size, round(width * scale)), max(size, round(height * scale))
    if (new_width, new_height) != (width, height):
        image = image.resize((new_width, new_height), Image.Resampling.BICUBIC)
    left, top = (new_width - size) // 2, (new_height - size) // 2
    return image.crop((left, top, left + size, top + size))


def to_channels(image: Image.Image, channels: int) -> Image.Image:
    """Grey ("L") or RGB; transparency is composited on white, 16-bit grey scaled to 8 bits."""
    if image.mode in HIGH_BIT_GREY:
        grey = np.asarray(image)  # uint16 ("I;16*") or int32 ("I"); widened so +128 cannot overflow
        grey = grey.astype(np.int32 if grey.dtype.itemsize <= 2 else np.int64)
        if image.mode.startswith("I;16") or grey.max() > 255:  # 16-bit range: 65535 → 255
            grey = (grey + 128) // 257  # = round(v / 257): v / 257 is never exactly k + 1/2
        image = Image.fromarray(np.clip(grey, 0, 255).astype(np.uint8))  # uint8 2-D → "L"
    elif image.mode == "F":
        raise ValueError("floating-point images (mode F) have no defined 8-bit range")
    has_alpha = image.mode in ALPHA_MODES or "transparency" in image.info
    if has_alpha:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba)
    return image.convert("L" if channels == 1 else "RGB")


def decode_image(data: bytes, size: int, channels: int) -> np.ndarray:
    """File bytes → uint8 (C, size, size): first frame, EXIF orientation applied, resized and cropped.

    Raises :class:`ImageRefused` for an empty file, bytes that are no image, or an image whose
    header claims a size outside the limits above; PIL's own errors for damaged files pass through.
    """
    if not data:
        raise ImageRefused("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():  # the pixel limit is checked below, with a clearer message
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            opened = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as error:
        raise ImageRefused(f"decompression bomb refused before decoding ({error})") from None
    except Image.UnidentifiedImageError:
        raise ImageRefused(f"not an image PIL can read (starts with {data[:8]!r})") from None
    with opened as image:  # pixels must be read before the image is closed
        image.draft(None, (size, size))  # JPEG: decode at 1/2, 1/4 or 1/8 scale when still ≥ size
        check_image_size(*image.size, size)  # after draft: the size that will really be decoded
        upright = ImageOps.exif_transpose(image) if _orientation(image) != 1 else image
        pixels = np.asarray(resize_center_crop(to_channels(upright, channels), size))  # (H, W) or (H, W, 3)
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


def check_image_size(width: int, height: int, size: int) -> None:
    """Refuse sizes whose decoding or resizing would be unbounded or meaningless (see the module doc)."""
    if width * height > MAX_IMAGE_PIXELS:
        raise ImageRefused(
            f"{width}×{height} = {width * height} pixels is over the {MAX_IMAGE_PIXELS}-pixel limit "
            "(a decompression bomb?); refused before decoding"
        )
    short, long = min(width, height), max(width, height)
    if short < min(MIN_SIDE_PX, size):
        raise ImageRefused(f"{width}×{height} pixels: a side under {min(MIN_SIDE_PX, size)} pixels")
    if long > MAX_ASPECT_RATIO * short:
        raise ImageRefused(
            f"{width}×{height} pixels: aspect ratio {long / short:.4g}:1 is over {MAX_ASPECT_RATIO}:1, "
            "so a centre crop would keep a sliver of it"
        )


def _orientation(image: Image.Image) -> int:
    """EXIF orientation tag (1 = upright), read without decoding pixels."""
    return image.getexif().get(ExifTags.Base.Orientation, 1)


def luma(rgb: np.ndarray) -> np.ndarray:
    """uint8 (N, 3, H, W) → (N, 1, H, W) with PIL's integer ITU-R 601-2 formula, bit for bit."""
    r, g, b = (rgb[:, i : i + 1].astype(np.uint32) for i in range(3))
    return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).astype(np.uint8)


def conform_images(images: np.ndarray, size: int | None, channels: int | None) -> np.ndarray:
    """uint8 (N, C, H, W) → (N, channels, size, size); None keeps that property as it is."""
    if channels is not None and channels != images.shape[1]:
        images = np.repeat(images, 3, axis=1) if channels == 3 else luma(images)
    height, width = images.shape[2:]
    if size is None or (height, width) == (size, size):
        return np.ascontiguousarray(images)
    grey = images.shape[1] == 1
    out = np.empty((len(images), images.shape[1], size, size), dtype=np.uint8)
    for i, chw in enumerate(images):
        pixels = np.ascontiguousarray(chw[0] if grey else chw.transpose(1, 2, 0))  # (H, W) or (H, W, 3)
        resized = np.asarray(resize_center_crop(Image.fromarray(pixels), size))  # PIL mode "L" or "RGB"
        out[i] = resized[None] if grey else resized.transpose(2, 0, 1)
    return out
