"""Tiny runs and user files the command tests work on.

The runs train for a few seconds, once per session: these tests check files, flags and errors, not
quality (tests/test_editing.py and tests/train/test_learning.py judge that).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ddpm.data import load_dataset
from ddpm.train.run import train
from tests.train.conftest import tiny_digits_config


def train_tiny(folder: Path, **data_options: object) -> Path:
    """A 6-step digits run (the digits preset's own sampler: dpm++2m_sde, trailing, ε / 1.06)."""
    config = tiny_digits_config()
    config = dataclasses.replace(config, data=dataclasses.replace(config.data, **data_options))
    run_dir = folder / "run"
    train(config, run_dir, log=lambda *_: None)
    return run_dir


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tiny(tmp_path_factory.mktemp("digits"))


@pytest.fixture(scope="session")
def conditional_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tiny(tmp_path_factory.mktemp("conditional-digits"), class_conditional=True)


@pytest.fixture(scope="session")
def user_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two real test digits as PNGs, a top-half mask, a samples .npz, and files that are not what they
    claim to be."""
    folder = tmp_path_factory.mktemp("user-files")
    test = load_dataset("digits", split="test")
    pixels = ((test.batch(torch.arange(2)) + 1) * 127.5).round().to(torch.uint8)  # (2, 1, 8, 8)
    files = {}
    for i in range(2):
        files[f"digit{i}"] = folder / f"digit{i}.png"
        Image.fromarray(pixels[i, 0].numpy()).save(files[f"digit{i}"])
    files["mask"] = folder / "mask.png"
    Image.fromarray(np.where(np.arange(64).reshape(8, 8) < 32, 255, 0).astype(np.uint8)).save(files["mask"])
    files["samples"] = folder / "samples.npz"
    noise = np.random.default_rng(0).integers(0, 256, size=(40, 8, 8, 1), dtype=np.uint8)
    np.savez(files["samples"], images=noise)
    for name, text in (("notes.txt", "not an image"), ("fake.png", "not a png"), ("broken.npz", "not a zip")):
        files[name] = folder / name
        files[name].write_text(text)
    return files


# A tiny UNet2DModel of 8×8 grey images (digits' shape) in diffusers' DDPM family: sines first, TF padding.
TINY_DIFFUSERS_UNET = {
    "sample_size": 8, "in_channels": 1, "out_channels": 1, "block_out_channels": (16, 32),
    "down_block_types": ("DownBlock2D", "AttnDownBlock2D"), "up_block_types": ("AttnUpBlock2D", "UpBlock2D"),
    "layers_per_block": 1, "norm_num_groups": 8, "attention_head_dim": 8, "flip_sin_to_cos": False,
    "freq_shift": 1, "downsample_padding": 0,
}  # fmt: skip


@pytest.fixture(scope="session")
def diffusers_folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same UNet2DModel + DDPMScheduler written by diffusers itself in both layouts: ``flat`` (a bare
    UNet2DModel and DDPMScheduler saved to one folder, as google/ddpm-cifar10-32) and ``pipeline``
    (DDPMPipeline.save_pretrained: unet/, scheduler/, model_index.json)."""
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    folder = tmp_path_factory.mktemp("diffusers")
    torch.manual_seed(0)
    unet = UNet2DModel(**TINY_DIFFUSERS_UNET).eval()
    scheduler = DDPMScheduler(num_train_timesteps=1000, variance_type="fixed_large")
    unet.save_pretrained(folder / "flat")
    scheduler.save_pretrained(folder / "flat")
    DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(folder / "pipeline")
    return {"flat": folder / "flat", "pipeline": folder / "pipeline"}
