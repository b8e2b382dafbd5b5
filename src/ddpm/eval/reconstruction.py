"""How well an autoencoder (latent diffusion's first stage) reconstructs real images (issue 20).

LDM (Rombach et al. 2022, Table 8) and its first stage's paper (Esser et al. 2021, "Taming
Transformers") report a first stage by reconstructions of held-out images: PSNR against the originals,
and rFID, the Fréchet distance between the reconstructions' features and those of the very images they
reconstruct. That FD is paired (a perfect autoencoder scores 0), so it is shown beside the real-data
floor of :func:`ddpm.eval.real_floor`: other real images (the train split's) scored against the same
reference, the FD that sampling noise alone gives at this n.

    reconstruct             encode (posterior mean, or a seeded sample) → decode → clamp; timed
    Reconstructions         originals, reconstructions, latents: PSNR, MSE, L1, per-channel latent stats
    score_reconstructions   the metrics, the sample-quality scores of the reconstructions and the floor
    pixel_reconstructions   the metrics alone, for data no feature network fits (``--feature-net none``)
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import Tensor

from ddpm.data import Dataset
from ddpm.diffusion.samplers.noise import per_sample_noise, sample_seeds
from ddpm.eval.adherence import psnr
from ddpm.eval.evaluate import Evaluation, score
from ddpm.eval.reference import REFERENCE_SUBSET_SEED, subset_index
from ddpm.nets.latent_codec import LatentCodec

POSTERIOR = {False: "posterior mean", True: "posterior sample"}  # which latents were decoded


@dataclass(frozen=True)
class Reconstructions:
    """Images and their reconstructions through an autoencoder, with the latents decoded."""

    originals: Tensor  # (n, C, H, W) in [-1, 1]
    images: Tensor  # (n, C, H, W): decoded, clamped to the data range [-1, 1] (not rounded to 8 bits)
    latents: Tensor  # (n, c, h, w): the normalised latents that were decoded
    seconds: float  # wall-clock time of encoding and decoding, data loading excluded

    def metrics(self) -> dict[str, float]:
        """Mean PSNR per image in dB, and MSE and L1 per pixel, all of images in [0, 1] (peak 1: the same
        PSNR as of [-1, 1] with peak 2); ``seconds`` of encoding and decoding."""
        error = (self.images.double() - self.originals.double()) / 2  # in [0, 1] units
        return {
            "n": float(len(self.images)),
            "psnr": float(psnr(self.images, self.originals, data_range=2.0).mean()),
            "mse": float(error.square().mean()),
            "l1": float(error.abs().mean()),
            "seconds": self.seconds,
        }

    def latent_stats(self) -> dict[str, list[float]]:
        """Per-channel mean and std of the normalised latents over every image and position: ≈ 0 and ≈ 1
        when the run's normalisation (estimated on training images) holds on these images."""
        per_channel = self.latents.double().transpose(0, 1).flatten(1)  # (c, n·h·w)
        return {"mean": per_channel.mean(1).tolist(), "std": per_channel.std(1).tolist()}


@torch.no_grad()
def reconstruct(
    codec: LatentCodec,
    originals: Tensor,
    *,
    batch_size: int = 256,
    sample_posterior: bool = False,
    seed: int = 0,
) -> Reconstructions:
    """Reconstruct ``originals`` (n, C, H, W) in [-1, 1] in batches on the codec's device: each image's
    posterior mean, or with ``sample_posterior`` a sample z = mean + std·ε with image i's ε from seed i of
    ``seed`` (the same at any batch size), decoded and clamped to [-1, 1]."""
    device = codec.mean.device
    latent_shape = codec.latent_shape(originals.shape[1:])
    seeds = sample_seeds(seed, len(originals)) if sample_posterior else None
    images, latents = [], []
    start_time = time.perf_counter()
    for start in range(0, len(originals), batch_size):
        batch = originals[start : start + batch_size].to(device)
        noise = None
        if seeds is not None:
            noise = per_sample_noise(seeds[start : start + len(batch)], latent_shape, device=device)
        z = codec.encode(batch, noise)  # (b, c, h, w), normalised
        images.append(codec.decode(z).clamp(-1.0, 1.0).cpu())
        latents.append(z.cpu())
    seconds = time.perf_counter() - start_time  # .cpu() waited for the device: the time includes it
    return Reconstructions(originals.cpu(), torch.cat(images), torch.cat(latents), seconds)


def score_reconstructions(
    codec: LatentCodec,
    evaluation: Evaluation,
    floor_data: Dataset | None,
    *,
    batch_size: int = 256,
    sample_posterior: bool = False,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, object]:
    """Reconstruct the n real images of ``evaluation``'s reference (its split's seeded subset) and score
    them: ``metrics`` (PSNR, MSE, L1, seconds, then ``score``'s keys of the reconstructions against those
    same images), ``floor`` (``score``'s keys of n images of ``floor_data``, drawn as ``real_floor`` draws
    its train images; None without floor data, when it holds fewer than n images or is the scored data set
    itself) and ``latent_stats``."""
    dataset, n = evaluation.dataset, evaluation.reference.features.shape[0]
    found = _reconstruct_subset(codec, dataset, n, batch_size, sample_posterior, seed)
    metrics = found.metrics()
    metrics.update(score(evaluation, found.images, batch_size=batch_size, seed=seed, progress=progress))
    floor = None
    # none from fewer than n images, or from the scored images themselves (a folder with one split)
    if floor_data is not None and len(floor_data) >= n and floor_data.fingerprint != dataset.fingerprint:
        real = floor_data.batch(subset_index(len(floor_data), n, seed))
        floor = score(evaluation, real, batch_size=batch_size, seed=seed, progress=progress)
    return {"metrics": metrics, "floor": floor, "latent_stats": found.latent_stats()}


def pixel_reconstructions(
    codec: LatentCodec,
    dataset: Dataset,
    n: int,
    *,
    batch_size: int = 256,
    sample_posterior: bool = False,
    seed: int = 0,
) -> dict[str, object]:
    """:func:`score_reconstructions` without a feature network: PSNR, MSE, L1 and the seconds of the same
    ``n`` images (the seeded subset every evaluation scores), no FD and no floor."""
    found = _reconstruct_subset(codec, dataset, n, batch_size, sample_posterior, seed)
    return {"metrics": found.metrics(), "floor": None, "latent_stats": found.latent_stats()}


def _reconstruct_subset(
    codec: LatentCodec, dataset: Dataset, n: int, batch_size: int, sample_posterior: bool, seed: int
) -> Reconstructions:
    originals = dataset.batch(subset_index(len(dataset), n, REFERENCE_SUBSET_SEED))
    return reconstruct(codec, originals, batch_size=batch_size, sample_posterior=sample_posterior, seed=seed)
