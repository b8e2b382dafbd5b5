"""Control signals for ControlNet: edges where the image changes and nowhere else (no border frame), masks,
drafts and luma with known values, users' control images read back, bad input refused in one line."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ddpm.data.controls import (
    CONTROLS,
    canny_edges,
    control_channels,
    foreground_mask,
    grayscale,
    load_control_images,
    lowres_draft,
    luma,
    make_control,
)


def square(size: int = 32, low: int = 8, high: int = 24, channels: int = 1) -> torch.Tensor:
    """A bright square [low, high)² on a dark ground, (1, C, size, size) in [-1, 1]."""
    image = -torch.ones(1, channels, size, size)
    image[:, :, low:high, low:high] = 1.0
    return image


def test_canny_finds_the_outline_of_a_square_and_nothing_else():
    edges = canny_edges(square())[0, 0] > 0  # (32, 32) bool
    rows, cols = torch.nonzero(edges, as_tuple=True)
    near_outline = ((rows - 7.5).abs() <= 2) | ((rows - 23.5).abs() <= 2)
    near_outline |= ((cols - 7.5).abs() <= 2) | ((cols - 23.5).abs() <= 2)
    assert near_outline.all()  # every edge lies on the square's border (within 2 px)
    assert not edges[11:21, 11:21].any() and not edges[:5].any() and not edges[:, 27:].any()
    for side in (edges[6:10, 10:22], edges[22:26, 10:22], edges[10:22, 6:10], edges[10:22, 22:26]):
        assert side.any(dim=0 if side.shape[0] == 4 else 1).all()  # each side traced without gaps


@pytest.mark.parametrize("value", [-1.0, 0.3, 1.0])
def test_canny_draws_no_frame_on_a_constant_image(value):
    # Zero padding would make a step from the image to black all around it: a frame of false edges.
    assert (canny_edges(torch.full((2, 1, 16, 16), value)) == -1).all()


def test_canny_edges_run_to_the_border_where_the_image_does():
    image = -torch.ones(1, 1, 16, 16)
    image[..., 8:] = 1.0  # a vertical step: one straight edge from the top row to the bottom row
    edges = canny_edges(image)[0, 0] > 0
    columns = torch.nonzero(edges.any(dim=0)).flatten().tolist()
    assert set(columns) <= {7, 8}
    assert edges.any(dim=1).all()  # every row, the first and last included (replicated, not dropped)


def test_canny_on_colour_images_reads_their_luma():
    rgb = square(channels=3) * torch.tensor([1.0, 0.2, -0.5]).view(1, 3, 1, 1)
    assert torch.equal(canny_edges(rgb), canny_edges(luma(rgb)))
    assert canny_edges(rgb).shape == (1, 1, 32, 32)


def test_foreground_mask_thresholds_the_luma():
    images = torch.tensor([-1.0, -0.1, 0.1, 1.0]).view(1, 1, 1, 4)
    assert foreground_mask(images).flatten().tolist() == [-1, -1, 1, 1]
    assert foreground_mask(images, threshold=0.5).flatten().tolist() == [-1, -1, -1, 1]
    green_blue = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0]]).view(1, 3, 1, 2)
    # luma of pure green: 2·0.587 − 1 > 0 (foreground); of pure blue: 2·0.114 − 1 < 0
    assert foreground_mask(green_blue).flatten().tolist() == [1, -1]


def test_lowres_draft_is_block_means_at_full_size():
    images = torch.arange(64, dtype=torch.float32).view(1, 1, 8, 8) / 32 - 1
    draft = lowres_draft(images, factor=4)
    assert draft.shape == images.shape
    blocks = images.view(1, 1, 2, 4, 2, 4).mean(dim=(3, 5))  # (1, 1, 2, 2)
    assert torch.allclose(draft, blocks.repeat_interleave(4, dim=2).repeat_interleave(4, dim=3))
    torch.testing.assert_close(lowres_draft(draft), draft)  # a draft of a draft is the draft
    assert lowres_draft(torch.rand(2, 3, 28, 28)).shape == (2, 3, 28, 28)


def test_grayscale_is_bt601_luma():
    colours = torch.tensor([[1.0, -1.0, -1.0], [-1.0, 1.0, -1.0], [-1.0, -1.0, 1.0], [1.0, 1.0, 1.0]])
    images = colours.T.reshape(1, 3, 1, 4)  # red, green, blue, white
    expected = [2 * 0.299 - 1, 2 * 0.587 - 1, 2 * 0.114 - 1, 1.0]
    assert grayscale(images).flatten().tolist() == pytest.approx(expected, abs=1e-6)
    assert grayscale(images).shape == (1, 1, 1, 4)


def test_make_control_and_channels():
    images = torch.rand(2, 3, 8, 8) * 2 - 1
    for kind in CONTROLS:
        control = make_control(kind, images)
        assert control.shape == (2, control_channels(kind, 3), 8, 8)
        assert control.min() >= -1 and control.max() <= 1
    assert control_channels("lowres", 1) == 1 and control_channels("canny", 3) == 1


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (
            lambda: canny_edges(torch.zeros(1, 16, 16)),
            r"images of shape \(1, 16, 16\) are not \(N, C, H, W\)",
        ),
        (lambda: foreground_mask(torch.zeros(1, 2, 8, 8)), r"shape \(1, 2, 8, 8\) .* C = 1 or 3"),
        (lambda: luma(torch.zeros(1, 1, 8, 8, dtype=torch.uint8)), r"float in \[-1, 1\], got torch.uint8"),
        (lambda: lowres_draft(torch.zeros(1, 1, 30, 30)), r"image size 30×30 is not divisible by .* 4"),
        (lambda: lowres_draft(torch.zeros(1, 1, 8, 8), factor=0), r"draft factor 0 must be a positive"),
        (lambda: grayscale(torch.zeros(1, 1, 8, 8)), r"grayscale control needs RGB .* got 1 channel"),
        (
            lambda: make_control("sketch", torch.zeros(1, 1, 8, 8)),
            r"unknown control 'sketch'; allowed: canny",
        ),
        (lambda: control_channels("depth", 3), r"unknown control 'depth'"),
    ],
)
def test_bad_input_is_refused_in_one_line(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def save(path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def test_control_images_load_from_a_folder_in_name_order(tmp_path):
    white_edge = np.zeros((8, 8, 3), dtype=np.uint8)
    white_edge[:, 3] = 255  # an edge map saved as RGB: read as one gray channel
    save(tmp_path / "b.png", white_edge)
    save(tmp_path / "a.png", np.zeros((8, 8), dtype=np.uint8))
    save(tmp_path / ".hidden" / "c.png", np.zeros((8, 8), dtype=np.uint8))
    controls = load_control_images(tmp_path, (1, 8, 8))
    assert controls.shape == (2, 1, 8, 8)
    assert (controls[0] == -1).all()  # a.png first: black is −1
    assert (controls[1, 0, :, 3] == 1).all() and (controls[1, 0, :, 4] == -1).all()
    one = load_control_images(tmp_path / "b.png", (1, 8, 8))
    assert torch.equal(one, controls[1:])


def test_control_images_pair_with_data_images_by_name(tmp_path):
    for name, value in [("cat/1.png", 0), ("cat/2.png", 255), ("dog/1.png", 128)]:
        save(tmp_path / name, np.full((4, 4), value, dtype=np.uint8))
    controls = load_control_images(tmp_path, (1, 4, 4), names=["dog/1.jpg", "cat/2.jpg", "cat/1.jpg"])
    assert controls[:, 0, 0, 0].tolist() == pytest.approx([128 / 127.5 - 1, 1.0, -1.0], abs=1e-6)
    with pytest.raises(ValueError, match=r"has no image for 'cat/3.jpg' \(1 missing\)"):
        load_control_images(tmp_path, (1, 4, 4), names=["cat/1.jpg", "cat/3.jpg"])


def test_control_images_of_another_size_or_nowhere_are_refused(tmp_path):
    save(tmp_path / "big.png", np.zeros((16, 12), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"big.png' is 12×16; this model needs 8×8 \(W×H\) control images"):
        load_control_images(tmp_path, (1, 8, 8))
    with pytest.raises(
        ValueError, match=r"control '.*nowhere' does not exist; give an image, a .npz or a folder"
    ):
        load_control_images(tmp_path / "nowhere", (1, 8, 8))
    with pytest.raises(ValueError, match=r"control folder '.*big.png' does not exist"):
        load_control_images(tmp_path / "big.png", (1, 8, 8), names=["a.png"])  # names need a folder
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"holds no images"):
        load_control_images(tmp_path / "empty", (1, 8, 8))
    np.savez(tmp_path / "controls.npz", images=np.zeros((2, 8, 8, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"holds images of shape \(8, 8, 3\); the model needs \(8, 8, 1\)"):
        load_control_images(tmp_path / "controls.npz", (1, 8, 8))


def test_paired_controls_keep_gray_images_and_refuse_colour_among_gray_controls(tmp_path):
    from ddpm.data.controls import control_key, load_paired_controls

    assert control_key("cat/1.jpg") == control_key("cat/1.png") == "cat/1" != control_key("1.png")
    gray_as_rgb = np.zeros((4, 4, 3), dtype=np.uint8)
    gray_as_rgb[1] = 255  # an edge map saved as RGB with equal channels: gray
    save(tmp_path / "cat" / "1.png", gray_as_rgb)
    save(tmp_path / "cat" / "2.bmp", np.full((4, 4), 128, dtype=np.uint8))
    controls = load_paired_controls(tmp_path, (1, 4, 4), ["cat/2.jpg", "cat/1.jpg"], chunk=1)
    assert (
        controls.shape == (2, 1, 4, 4) and (controls[1, 0, 1] == 1).all() and (controls[1, 0, 0] == -1).all()
    )
    assert ((controls[0] + 1) * 127.5).round().eq(128).all()
    red = np.zeros((4, 4, 3), dtype=np.uint8)
    red[..., 0] = 255
    save(tmp_path / "cat" / "3.png", red)
    with pytest.raises(
        ValueError, match=r"control image '.*3\.png' is in colour; this run's controls are gray"
    ):
        load_paired_controls(tmp_path, (1, 4, 4), ["cat/1.jpg", "cat/3.jpg"])
    assert load_paired_controls(tmp_path, (3, 4, 4), ["cat/3.jpg"])[0, 0].eq(1).all()
    save(tmp_path / "cat" / "3.jpg", red)
    with pytest.raises(ValueError, match=r"has two images named 'cat/3' \(3\.jpg and 3\.png\); keep one"):
        load_paired_controls(tmp_path, (3, 4, 4), ["cat/3.jpg"])
    assert len(load_control_images(tmp_path, (1, 4, 4))) == 4  # listing a folder (ddpm sample) takes both
