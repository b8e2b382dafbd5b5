"""The first stage of latent diffusion as the model uses it: an autoencoder and the per-channel
normalisation of its latents (Rombach et al. 2022, §3 and §4.3.2).

Diffusion assumes data of roughly unit variance (x_T ~ N(0, I) must look like noised data). An
autoencoder's latents have their own scale: a KL weight of 1e-6 barely pulls them towards N(0, I), so
their mean and spread depend on the architecture and the data (a small f=4 MNIST autoencoder's have
mean ≈ −0.6 and std ≈ 0.9; Stable Diffusion's VAE's have std ≈ 5.5, hence its famous 1 / 0.18215).
The normalisation is therefore *estimated from data* per autoencoder — per channel, as newer diffusers
VAEs store ``latents_mean`` / ``latents_std``; LDM's ``scale_by_std`` (one 1/std from the first batch)
is the special case of one channel group and zero mean — and never copied from another model:

    z_norm = (z − mean_c) / std_c    diffusion runs here;    z = z_norm · std_c + mean_c    decodes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ddpm.configio import coerce
from ddpm.nets.autoencoder import AutoencoderConfig, AutoencoderKL


@dataclass(frozen=True)
class LatentConfig:
    """Latent diffusion (Rombach et al. 2022): the autoencoder whose latents a diffusion run models."""

    autoencoder: str = ""  # run directory of ``ddpm train --kind autoencoder``; "" → diffusion on pixels
    autoencoder_sha256: str = ""  # sha256 of its EMA weights, recorded when the run starts ("" → newest)


class LatentCodec(nn.Module):
    """Images in [−1, 1] (B, C, H, W) ⇄ normalised latents (B, c, H/f, W/f) through a frozen autoencoder."""

    def __init__(self, autoencoder: AutoencoderKL, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        channels = autoencoder.config.latent_channels
        if len(mean) != channels or len(std) != channels:
            raise ValueError(
                f"latent normalisation has {len(mean)} means and {len(std)} stds; the autoencoder has "
                f"{channels} latent channels"
            )
        if not all(s > 0 for s in std):
            raise ValueError(f"latent std {list(std)} must be > 0 in every channel")
        self.autoencoder = autoencoder.eval().requires_grad_(False)
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    @classmethod
    def from_checkpoint(
        cls, path: Path, meta: Mapping[str, Any], weights: Mapping[str, Tensor]
    ) -> LatentCodec:
        """From an autoencoder checkpoint: its ``meta.json`` (``meta``: the config's model table and the
        ``latent_stats`` its run estimated) and its EMA ``weights``."""
        stats = meta.get("latent_stats")
        if not isinstance(stats, dict) or not {"mean", "std"} <= set(stats):
            raise ValueError(f"autoencoder checkpoint {path} records no latent normalisation (latent_stats); "
                             "resume its run to write a checkpoint with one")  # fmt: skip
        section = {key: value for key, value in meta["config"]["model"].items() if key != "kind"}
        autoencoder = AutoencoderKL(coerce(AutoencoderConfig, section, "model"))
        autoencoder.load_state_dict(weights)
        return cls(autoencoder, stats["mean"], stats["std"])

    @property
    def downsample_factor(self) -> int:
        return self.autoencoder.config.downsample_factor

    def latent_shape(self, image_shape: Sequence[int]) -> tuple[int, int, int]:
        """(c, H/f, W/f) of images shaped ``image_shape`` (C, H, W)."""
        _, height, width = image_shape
        f = self.downsample_factor
        return (self.autoencoder.config.latent_channels, height // f, width // f)

    def posterior(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """(mean, std) of q(z|x) in normalised units, each (B, c, h, w): z_norm = mean + std · ε."""
        q = self.autoencoder.encode(images)
        return (q.mean - self.mean) / self.std, q.std / self.std

    def encode(self, images: Tensor, noise: Tensor | None = None) -> Tensor:
        """Normalised latents of ``images``: the posterior's mean, or a sample of it given ε ``noise``."""
        mean, std = self.posterior(images)
        return mean if noise is None else mean + std * noise

    def decode(self, latents: Tensor) -> Tensor:
        """Images (B, C, H, W) of normalised latents (B, c, h, w); not clamped."""
        return self.autoencoder.decode(latents * self.std + self.mean)


@torch.no_grad()
def latent_statistics(
    autoencoder: AutoencoderKL, batches: Iterable[Tensor], generator: torch.Generator
) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of posterior samples z ~ q(z|x) over image ``batches`` (B, C, H, W).

    Sums in float64 over every latent element of a channel; ``generator`` draws the posterior noise.
    """
    total = squares = None
    count = 0
    for images in batches:
        q = autoencoder.encode(images)
        z = q.mean + q.std * torch.randn(q.mean.shape, generator=generator, device=generator.device).to(
            q.mean.device
        )
        z = z.double().transpose(0, 1).flatten(1)  # (c, B·h·w)
        total = z.sum(1) if total is None else total + z.sum(1)
        squares = z.square().sum(1) if squares is None else squares + z.square().sum(1)
        count += z.shape[1]
    if total is None or count < 2:
        raise ValueError("latent statistics need at least one batch of images")
    mean = total / count
    std = (squares / count - mean.square()).clamp_min(0).mul(count / (count - 1)).sqrt()
    return mean.tolist(), std.tolist()
