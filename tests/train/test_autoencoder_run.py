"""Autoencoder runs (latent diffusion's first stage) through the one training loop: they train, resume
bit for bit, draw reconstruction previews, and record a latent normalisation that makes the latents of
the training data unit-variance per channel."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from ddpm.configio import ConfigError
from ddpm.nets.latent_codec import LatentCodec
from ddpm.rundir import RunDir, read_checkpoint_meta, read_weights
from ddpm.train.checkpoint import load_checkpoint
from ddpm.train.config import TrainConfig
from ddpm.train.config_layers import build_train_config
from ddpm.train.run import train
from ddpm.train.run_data import load_data

TINY_AUTOENCODER = (
    "model.block_out_channels=[8, 16]", "model.latent_channels=2", "run.batch_size=16", "run.log_every=1",
    "run.checkpoint_every=3", "run.sample_every=3", "run.preview_images=6",
)  # fmt: skip


def tiny_autoencoder_config(steps: int = 6, *overrides: str) -> TrainConfig:
    """An f=2 autoencoder of digits (8×8 → 2×4×4) that trains a step in a few milliseconds."""
    return build_train_config("digits", kind="autoencoder", overrides=(*TINY_AUTOENCODER, *overrides),
                              flags={"run.steps": steps})  # fmt: skip


def test_the_data_set_picks_the_autoencoder_preset_and_the_factor_key_sets_the_levels():
    config = build_train_config("mnist", kind="autoencoder")
    assert config.is_autoencoder and config.model.downsample_factor == 4
    assert config.model.block_out_channels == (32, 64, 64)
    f8 = build_train_config("cifar10", kind="autoencoder", overrides=["model.downsample_factor=8"])
    assert f8.model.block_out_channels == (32, 64, 64, 64) and f8.model.latent_shape == (4, 4, 4)
    f2 = build_train_config("cifar10", kind="autoencoder", overrides=["model.downsample_factor=2"])
    assert f2.model.block_out_channels == (32, 64)
    with pytest.raises(ConfigError, match=r"model.downsample_factor=3 is not allowed; choose a power of two"):
        build_train_config("cifar10", kind="autoencoder", overrides=["model.downsample_factor=3"])
    with pytest.raises(ValueError, match=r"data 'swissroll' is 2-D points; autoencoder runs need images"):
        build_train_config("swissroll", kind="autoencoder")


def test_an_autoencoder_config_round_trips_without_diffusion_tables(tmp_path):
    train(tiny_autoencoder_config(1), tmp_path / "run", log=lambda *_: None)
    stored = RunDir(tmp_path / "run").config_dict()
    assert stored["model"]["kind"] == "autoencoder" and stored["model"]["image_size"] == 8
    assert (
        "diffusion" not in stored
        and "latent" not in stored
        and stored["autoencoder_loss"]["kl_weight"] == 1e-6
    )


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.class_conditional=true", r"data.class_conditional applies to diffusion runs"),
        ("run.eval_every=2", r"run.eval_every applies to diffusion runs"),
        (
            "autoencoder_loss.disc_weight=0.5",
            r"^autoencoder_loss.disc_num_layers=3 leaves no patch of 8×8 images to judge; use at most 1$",
        ),
        ("autoencoder_loss.disc_weight=-0.5", r"^autoencoder_loss: disc_weight -0.5 must be a number ≥ 0$"),
        (
            "autoencoder_loss.disc_start_steps=-1",
            r"^autoencoder_loss: disc_start_steps -1 must be an integer ≥ 0$",
        ),
        ("autoencoder_loss.disc_channels=0", r"^autoencoder_loss: disc_channels 0 must be an integer ≥ 1$"),
        ("data.image_size=7", r"model does not fit data 'digits' of shape \(1, 7, 7\): image_size 7 cannot"),
    ],
)
def test_what_an_autoencoder_run_cannot_take_is_refused_before_anything_is_written(
    tmp_path, override, message
):
    with pytest.raises(ValueError, match=message):
        train(tiny_autoencoder_config(2, override), tmp_path / "run", log=lambda *_: None)
    assert not (tmp_path / "run").exists()


def test_an_autoencoder_run_resumes_bit_for_bit_and_draws_reconstruction_previews(tmp_path):
    config = tiny_autoencoder_config(6)
    train(config, tmp_path / "whole", log=lambda *_: None)
    train(tiny_autoencoder_config(3), tmp_path / "split", log=lambda *_: None)
    train(config, tmp_path / "split", resume=True, log=lambda *_: None)
    whole = load_checkpoint(RunDir(tmp_path / "whole").latest_checkpoint())
    split = load_checkpoint(RunDir(tmp_path / "split").latest_checkpoint())
    assert whole.step == split.step == 6
    for name in ("model", "ema", "optimizer"):
        a, b = getattr(whole, name), getattr(split, name)
        assert a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a), name
    assert whole.meta["latent_stats"] == split.meta["latent_stats"]
    logged = [
        json.loads(line)["step"] for line in (tmp_path / "split" / "log.jsonl").read_text().splitlines()
    ]
    assert logged == [1, 2, 3, 4, 5, 6]

    samples = tmp_path / "whole" / "samples"
    assert sorted(p.name for p in samples.iterdir()) == ["final.npz", "final.png", "step_0000003.png"]
    final = np.load(samples / "final.npz")
    assert final["images"].shape == final["originals"].shape == (6, 8, 8, 1)
    assert final["images"].dtype == np.uint8


def test_the_stored_normalisation_gives_the_training_latents_unit_variance_per_channel(tmp_path):
    train(tiny_autoencoder_config(40), tmp_path / "run", log=lambda *_: None)
    checkpoint = RunDir(tmp_path / "run").latest_checkpoint()
    meta = read_checkpoint_meta(checkpoint)
    codec = LatentCodec.from_checkpoint(checkpoint, meta, read_weights(checkpoint))
    images = load_data(tiny_autoencoder_config()).batch(torch.arange(1500))
    generator = torch.Generator().manual_seed(123)  # other posterior noise than the estimate's
    with torch.no_grad():
        mean, std = codec.posterior(images)
        latents = mean + std * torch.randn(mean.shape, generator=generator)  # (N, 2, 4, 4), normalised
    per_channel = latents.transpose(0, 1).flatten(1)
    assert per_channel.std(1).sub(1).abs().max() < 0.05, per_channel.std(1)
    assert per_channel.mean(1).abs().max() < 0.05, per_channel.mean(1)
    raw = per_channel * codec.std.flatten()[:, None] + codec.mean.flatten()[:, None]
    assert (raw.std(1) - 1).abs().max() > 0.05 or raw.mean(1).abs().max() > 0.05  # not unit already


def test_the_stats_in_meta_are_the_ema_autoencoders_own(tmp_path):
    """Estimated from the weights saved, not a constant: a longer run's stats differ."""
    train(tiny_autoencoder_config(3), tmp_path / "short", log=lambda *_: None)
    config = dataclasses.replace(tiny_autoencoder_config(6))
    train(config, tmp_path / "long", log=lambda *_: None)
    stats = [read_checkpoint_meta(RunDir(tmp_path / name).latest_checkpoint())["latent_stats"]
             for name in ("short", "long")]  # fmt: skip
    assert stats[0]["images"] == stats[1]["images"] == 1500
    assert stats[0]["std"] != stats[1]["std"] and 0.18215 not in stats[1]["std"]
