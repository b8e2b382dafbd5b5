import numpy as np
import pytest
import torch
from PIL import Image

from ddpm.viz.grid import MIN_SAVED_GRID_PX, make_grid, save_grid, to_uint8, upscale_nearest
from tests.viz.fakes import fake_images


def test_to_uint8_maps_the_ends_and_clips():
    x = torch.tensor([-1.0, 0.0, 1.0, -3.0, 3.0])
    assert to_uint8(x).tolist() == [0, 128, 255, 0, 255]


def test_make_grid_places_each_image_between_padding():
    images = torch.linspace(-1, 1, 10)[:, None, None, None].expand(10, 1, 8, 8)
    grid = make_grid(images, nrow=4, padding=2)
    assert grid.shape == (3 * 10 + 2, 4 * 10 + 2, 1) and grid.dtype == np.uint8
    for i in range(10):
        row, col = divmod(i, 4)
        cell = grid[2 + 10 * row : 10 + 10 * row, 2 + 10 * col : 10 + 10 * col, 0]
        assert (cell == to_uint8(images[i, 0, 0, 0])).all()
    assert (grid[:2] == 255).all() and (grid[:, :2] == 255).all()  # white padding
    assert (grid[22:, 22:] == 255).all()  # the two empty slots of the last row


def test_make_grid_default_is_square_and_rgb_stays_rgb():
    grid = make_grid(fake_images(16, channels=3), padding=1)
    assert grid.shape == (4 * 9 + 1, 4 * 9 + 1, 3)


def test_save_grid_upscales_without_blur(tmp_path):
    images = fake_images(16)
    path = save_grid(images, tmp_path / "grid.png")
    saved = np.asarray(Image.open(path))
    base = make_grid(images)[..., 0]
    scale = saved.shape[0] // base.shape[0]
    assert max(saved.shape) >= MIN_SAVED_GRID_PX and saved.shape == (
        base.shape[0] * scale,
        base.shape[1] * scale,
    )
    assert (saved == upscale_nearest(base[..., None], scale)[..., 0]).all()  # every pixel a sharp block
    assert saved.var() > 0


def test_save_grid_with_explicit_scale(tmp_path):
    path = save_grid(fake_images(4, channels=3), tmp_path / "g.png", nrow=2, scale=3)
    assert Image.open(path).size == (3 * (2 * 10 + 2), 3 * (2 * 10 + 2))


@pytest.mark.parametrize("shape", [(10, 2), (4, 2, 8, 8), (0, 1, 8, 8), (1, 8, 8)])
def test_make_grid_rejects_non_images(shape):
    with pytest.raises(ValueError, match=r"must be \(N, C, H, W\) with N ≥ 1 and C = 1 or 3"):
        make_grid(torch.zeros(shape))


def test_make_grid_rejects_bad_nrow_and_padding():
    with pytest.raises(ValueError, match="nrow=0 must be ≥ 1"):
        make_grid(fake_images(4), nrow=0)
    with pytest.raises(ValueError, match="padding=-1 must be ≥ 0"):
        make_grid(fake_images(4), padding=-1)


def test_upscale_rejects_non_integer_scale():
    with pytest.raises(ValueError, match="scale=0 must be an integer ≥ 1"):
        upscale_nearest(np.zeros((2, 2, 1), np.uint8), 0)
    with pytest.raises(ValueError, match=r"scale=1\.5 must be an integer ≥ 1"):
        upscale_nearest(np.zeros((2, 2, 1), np.uint8), 1.5)
