"""``ddpm train --controlnet BASE --control folder:PATH``: users' own control images, one per training image
of a ``folder:`` data set, paired by relative path without suffix (Zhang, Rao & Agrawala 2023 train on such
pairs); incomplete pairings, sizes and channels that do not fit are refused in one line, writing nothing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ddpm.configio import ConfigError
from ddpm.data import load_dataset
from ddpm.train.config_layers import build_train_config
from ddpm.train.control_config import control_layers
from ddpm.train.control_data import control_training_data
from ddpm.train.run import train
from ddpm.train.run_data import load_data
from tests.conftest import QUIET

PER_CLASS = 2  # digits per class folder: 20 training images


def write_pairs(root, *, control_suffix=".png", skip=(), colour=(), size=8):
    """A folder: data set of test digits (class folders 0-9, .jpg-free PNGs) and a control folder beside it
    holding each image's mask as <class>/<i><control_suffix>, written in reverse order (pairing must not
    depend on it); names in ``skip`` get no control, those in ``colour`` a red one."""
    digits = load_dataset("digits", split="test")
    pixels = ((digits.batch(torch.arange(len(digits))) + 1) * 127.5).round().to(torch.uint8)[:, 0].numpy()
    pairs = []
    for label in range(10):
        rows = (digits.labels == label).nonzero()[:PER_CLASS, 0].tolist()
        pairs += [(f"{label}/{i}", pixels[row]) for i, row in enumerate(rows)]
    for name, image in reversed(pairs):
        (root / "data" / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / "data" / f"{name}.png")
        if name in skip:
            continue
        mask = np.where(image > 127, 255, 0).astype(np.uint8)
        mask = np.array(Image.fromarray(mask).resize((size, size))) if size != 8 else mask
        if name in colour:
            mask = np.stack([mask, np.zeros_like(mask), np.zeros_like(mask)], axis=-1)
        (root / "controls" / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(mask).save(root / "controls" / f"{name}{control_suffix}")
    return {name: image for name, image in pairs}


def folder_config(base, root, *overrides):
    sets = ["run.steps=2", "run.checkpoint_every=2", "run.sample_every=0", "run.log_every=1",
            "run.batch_size=8", "run.preview_images=4", "run.preview_steps=5", "optim.warmup_steps=0",
            "data.image_size=8", "data.channels=1", *overrides]  # fmt: skip
    layers = control_layers(str(base), f"folder:{root / 'controls'}", f"folder:{root / 'data'}")
    return build_train_config("digits", base_layers=layers, overrides=sets)


def test_users_control_images_pair_with_folder_images_by_name(control_base, tmp_path):
    images = write_pairs(tmp_path, control_suffix=".bmp")  # another suffix than the data's: names pair
    config = folder_config(control_base, tmp_path)
    dataset = load_data(config)
    assert dataset.names[:3] == ("0/0.png", "0/1.png", "1/0.png")  # sorted, whatever the writing order
    data, config = control_training_data(config, dataset, **QUIET)
    assert config.control.folder == str((tmp_path / "controls").resolve())
    for row, name in enumerate(dataset.names):
        expected = np.where(images[name.removesuffix(".png")] > 127, 255, 0)
        assert np.array_equal(data.controls[row, 0].numpy(), expected), name
    train(config, tmp_path / "run", **QUIET)
    assert (tmp_path / "run" / "checkpoints").is_dir()


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", r"has no image for '3/1\.png' \(2 missing\); give one control image per data image"),
        ("size", r"control image '.*0/0\.png' is 16×16; this model needs 8×8 \(W×H\) control images"),
        ("colour", r"control image '.*5/0\.png' is in colour; this run's controls are gray \(1 channel\)"),
        ("channels", r"control\.control_channels=2 does not fit image files; use 1 \(gray\) or 3"),
        ("twice", r"control folder '.*controls' has two images named '7/1' \(1\.jpg and 1\.png\); keep one"),
        ("no names", r"--control folder:PATH pairs control images with the data's by relative name; data "),
    ],
)
def test_pairings_that_do_not_fit_are_refused_in_one_line_and_write_nothing(case, message, control_base,
                                                                             tmp_path):  # fmt: skip
    skip, colour = ("3/1", "9/0") if case == "missing" else (), ("5/0",) * (case == "colour")
    write_pairs(tmp_path, skip=skip, colour=colour, size=16 if case == "size" else 8)
    if case == "twice":
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "controls" / "7" / "1.jpg")
    sets = ["control.control_channels=2"] if case == "channels" else []
    config = folder_config(control_base, tmp_path, *sets)
    if case == "no names":
        layers = control_layers(str(control_base), f"folder:{tmp_path / 'controls'}", None)
        config = build_train_config("digits", base_layers=layers, overrides=["run.steps=1"])
    with pytest.raises((ConfigError, ValueError), match=message) as error:
        train(config, tmp_path / "out", **QUIET)
    assert "\n" not in str(error.value)
    assert not (tmp_path / "out").exists()


def test_colour_controls_train_with_three_control_channels(control_base, tmp_path):
    write_pairs(tmp_path, colour=("5/0",))
    config = folder_config(control_base, tmp_path, "control.control_channels=3")
    data, config = control_training_data(config, load_data(config), **QUIET)
    assert data.controls.shape == (20, 3, 8, 8) and config.control.control_channels == 3
