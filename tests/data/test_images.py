"""Image decoding and conforming: resize + centre crop, grey conversion, alpha, EXIF, 16-bit."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from ddpm.data.images import conform_images, decode_image, luma, resize_center_crop


def _encode(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _bands(width: int, height: int) -> Image.Image:
    """Left third red, middle green, right third blue."""
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    third = width // 3
    pixels[:, :third, 0] = 255
    pixels[:, third : 2 * third, 1] = 255
    pixels[:, 2 * third :, 2] = 255
    return Image.fromarray(pixels)


def test_non_square_image_is_scaled_by_its_short_side_and_centre_cropped() -> None:
    out = decode_image(_encode(_bands(60, 20)), size=10, channels=3)  # → 30×10, keep columns 10..19
    assert out.shape == (3, 10, 10) and out.dtype == np.uint8
    assert (out[1, :, 2:8] > 200).all() and (out[0, :, 2:8] < 50).all() and (out[2, :, 2:8] < 50).all()
    tall = decode_image(_encode(_bands(20, 60).rotate(90, expand=True)), size=10, channels=3)
    assert tall.shape == (3, 10, 10)
    assert resize_center_crop(Image.new("RGB", (7, 3)), 5).size == (5, 5)  # upscaling too


def test_grey_conversion_matches_pil_and_luma_bit_for_bit() -> None:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (2, 3, 5, 4), dtype=np.uint8)
    pil_grey = np.stack([np.asarray(Image.fromarray(img.transpose(1, 2, 0)).convert("L")) for img in rgb])
    assert np.array_equal(luma(rgb)[:, 0], pil_grey)
    decoded = decode_image(_encode(Image.fromarray(rgb[0].transpose(1, 2, 0))), size=4, channels=1)
    # 4 wide × 5 tall: the short side already is 4, so only the centre crop (rows 0..3) applies
    assert np.array_equal(decoded[0], pil_grey[0][0:4])
    assert np.array_equal(conform_images(rgb, None, 1), luma(rgb))


def test_alpha_is_composited_on_white() -> None:
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[:2, :, :] = (255, 0, 0, 255)  # top half opaque red, bottom half fully transparent black
    out = decode_image(_encode(Image.fromarray(rgba, "RGBA")), size=4, channels=3)
    assert out[:, 0, 0].tolist() == [255, 0, 0] and out[:, 3, 0].tolist() == [255, 255, 255]
    grey_alpha = Image.fromarray(np.zeros((4, 4), dtype=np.uint8)).convert("LA")
    grey_alpha.putalpha(0)
    assert (decode_image(_encode(grey_alpha), size=4, channels=1) == 255).all()


def test_exif_orientation_is_applied() -> None:
    pixels = np.zeros((20, 20, 3), dtype=np.uint8)
    pixels[:, :10, 0] = 255  # stored: left half red
    pixels[:, 10:, 2] = 255  # right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to view": the stored left column becomes the top row
    data = _encode(Image.fromarray(pixels), "JPEG", exif=exif.tobytes(), quality=95)
    upright = decode_image(data, size=20, channels=3)
    assert upright[0, 3, 16] > 200 and upright[2, 3, 16] < 50  # top right is red
    assert upright[2, 16, 3] > 200 and upright[0, 16, 3] < 50  # bottom left is blue


def test_sixteen_bit_grey_is_scaled_to_eight_bits() -> None:
    values = np.array([[0, 257 * 100], [65535, 257 * 7]], dtype=np.uint16)
    out = decode_image(_encode(Image.fromarray(values)), size=2, channels=1)
    assert out[0].tolist() == [[0, 100], [255, 7]]


def test_gif_first_frame_and_palette() -> None:
    frames = [Image.new("P", (4, 4), color) for color in (1, 2)]
    for frame in frames:
        frame.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255] + [0] * 759)
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:])
    out = decode_image(buffer.getvalue(), size=4, channels=3)
    assert out[:, 0, 0].tolist() == [255, 0, 0]  # frame 0 is red


def test_float_images_are_refused() -> None:
    with pytest.raises(ValueError, match=r"floating-point images \(mode F\)"):
        decode_image(_encode(Image.new("F", (4, 4)), "TIFF"), size=4, channels=1)
