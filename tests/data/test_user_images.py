"""Images and masks handed to the editing commands, fitted to a model's sample shape."""

import numpy as np
import pytest
import torch
from PIL import Image

from ddpm.data.user_images import load_images, load_mask


def test_image_files_are_checked(tmp_path):
    (tmp_path / "notes.txt").write_text("not an image")
    np.savez(tmp_path / "points.npz", points=np.zeros((3, 2), np.float32))
    np.savez(tmp_path / "big.npz", images=np.zeros((3, 28, 28, 1), np.uint8))
    cases = [
        ("notes.txt", r"image '.*notes\.txt' must be \.npz or one of \.png"),
        ("points.npz", r"'.*points\.npz' has no 'images' array"),
        ("big.npz", r"'.*big\.npz' holds images of shape \(28, 28, 1\); the model needs \(8, 8, 1\)"),
    ]
    for name, match in cases:
        with pytest.raises(ValueError, match=match):
            load_images([tmp_path / name], (1, 8, 8))
    with pytest.raises(ValueError, match=r"no images given"):
        load_images([], (1, 8, 8))
    Image.new("L", (32, 32), 200).save(tmp_path / "big.png")  # resized to the model's 8×8
    loaded = load_images([tmp_path / "big.png", tmp_path / "big.png"], (1, 8, 8))
    assert loaded.shape == (2, 1, 8, 8)
    torch.testing.assert_close(loaded, torch.full((2, 1, 8, 8), 200 / 127.5 - 1))


def test_missing_files_and_unknown_masks_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"image '.*none\.png' does not exist"):
        load_images([tmp_path / "none.png"], (1, 8, 8))
    with pytest.raises(ValueError, match=r"--mask 'middle' is neither a file nor one of top"):
        load_mask("middle", (1, 8, 8))


def test_named_masks_cover_their_region():
    top = load_mask("top", (1, 8, 8))
    assert top.dtype == torch.bool and top[:4].all() and not top[4:].any()
    center = load_mask("center", (1, 8, 8))
    assert center[2:6, 2:6].all() and center.sum() == 16
