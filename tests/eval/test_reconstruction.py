"""An autoencoder's reconstructions measured (``ddpm.eval.reconstruction``): the metrics' units, the
posterior mean or a per-image seeded sample, and when the real-data floor is left out."""

from __future__ import annotations

import math

import pytest
import torch

from ddpm.data import load_dataset
from ddpm.eval import prepare
from ddpm.eval.reconstruction import Reconstructions, reconstruct, score_reconstructions
from ddpm.nets.autoencoder import AutoencoderConfig, AutoencoderKL
from ddpm.nets.latent_codec import LatentCodec


@pytest.fixture(scope="module")
def codec() -> LatentCodec:
    """An untrained f=2 autoencoder of 8×8 grey images with a made-up normalisation."""
    torch.manual_seed(0)
    config = AutoencoderConfig(in_channels=1, image_size=8, block_out_channels=(8, 8), latent_channels=2,
                               norm_num_groups=4)  # fmt: skip
    return LatentCodec(AutoencoderKL(config), mean=[0.1, -0.2], std=[0.5, 2.0])


def test_metrics_are_of_images_in_0_1():
    originals = torch.zeros(3, 1, 4, 4)
    found = Reconstructions(originals, originals + 0.2, torch.zeros(3, 2, 2, 2), seconds=0.5)
    metrics = found.metrics()  # an error of 0.2 in [-1, 1] is 0.1 in [0, 1]
    assert metrics["mse"] == pytest.approx(0.01) and metrics["l1"] == pytest.approx(0.1)
    assert metrics["psnr"] == pytest.approx(20.0) and metrics["n"] == 3 and metrics["seconds"] == 0.5
    assert math.isinf(Reconstructions(originals, originals, originals, 0.0).metrics()["psnr"])


def test_latent_stats_are_per_channel():
    latents = torch.stack([torch.full((5, 2, 2), 3.0), torch.arange(20.0).view(5, 2, 2)], dim=1)
    stats = Reconstructions(torch.zeros(5, 1), torch.zeros(5, 1), latents, 0.0).latent_stats()
    assert stats["mean"] == pytest.approx([3.0, 9.5]) and stats["std"][0] == 0.0
    assert stats["std"][1] == pytest.approx(torch.arange(20.0).std().item())


def test_the_posterior_mean_is_decoded_and_clamped(codec):
    images = load_dataset("digits", split="test").batch(torch.arange(10))
    found = reconstruct(codec, images, batch_size=4)
    with torch.no_grad():
        expected = codec.decode(codec.encode(images))
    assert torch.allclose(found.images, expected.clamp(-1, 1), atol=1e-6)
    assert found.latents.shape == (10, 2, 4, 4) and torch.equal(found.originals, images)
    assert found.seconds > 0


def test_a_posterior_sample_is_the_same_at_any_batch_size_and_differs_by_seed(codec):
    images = load_dataset("digits", split="test").batch(torch.arange(10))
    one = reconstruct(codec, images, batch_size=10, sample_posterior=True, seed=1)
    three = reconstruct(codec, images, batch_size=3, sample_posterior=True, seed=1)
    assert torch.allclose(one.latents, three.latents, atol=1e-6)
    other = reconstruct(codec, images, sample_posterior=True, seed=2)
    mean = reconstruct(codec, images)
    assert not torch.allclose(one.latents, other.latents) and not torch.allclose(one.latents, mean.latents)


def test_no_floor_from_the_scored_images_themselves_or_from_too_few(codec, eval_cache, digits_classifier):
    evaluation = prepare("digits", 20, metrics=["fd"], cache_dir=eval_cache)
    train = load_dataset("digits", split="train")
    found = score_reconstructions(codec, evaluation, train)
    assert found["floor"]["n"] == 20 and found["metrics"]["fd_classifier"] > 0
    assert found["metrics"]["n"] == 20 and len(found["latent_stats"]["mean"]) == 2
    assert score_reconstructions(codec, evaluation, evaluation.dataset)["floor"] is None
    few = load_dataset("digits", split="train")
    few = type(few)(few.spec, few.kind, few.data[:5], None, None, few.fingerprint)
    assert score_reconstructions(codec, evaluation, few)["floor"] is None
