"""The KL-regularised autoencoder of latent diffusion (Rombach et al. 2022, §3 and appendix G;
CompVis/latent-diffusion ``ldm/modules/diffusionmodules/model.py``; diffusers' ``AutoencoderKL``).

x (B, C, H, W) → encoder → quant_conv → moments (B, 2c, H/f, W/f) = (mean, log σ²) of a diagonal
Gaussian posterior q(z|x); z ~ q(z|x) → post_quant_conv → decoder → x̂ (B, C, H, W). The latent is
regularised towards N(0, I) by a small KL term (Kingma & Welling 2014), weight ≈ 1e-6 in LDM, so it
stays close to the data manifold's own scale: estimate that scale from data before running diffusion
on it, never assume Stable Diffusion's 0.18215.

Submodule names follow LDM's code (as our U-Net's follow the DDPM code): encoder.conv_in,
encoder.down[i].block[j], encoder.down[i].downsample, encoder.mid.block_1 / attn_1 / block_2,
encoder.norm_out, encoder.conv_out, quant_conv, post_quant_conv, decoder.conv_in, decoder.mid.*,
decoder.up[i].block[j], decoder.up[i].upsample, decoder.norm_out, decoder.conv_out. Level i works at
resolution H / 2^i in both paths, so diffusers' names follow by the rename table of
:mod:`ddpm.nets.diffusers_unet` (up levels counted from the bottom there).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ddpm.nets.attention import AttnBlock
from ddpm.nets.blocks import Downsample, ResnetBlock, Upsample, norm_silu
from ddpm.nets.configs import halvings
from ddpm.nets.unet import DownLevel, UpLevel

LOGVAR_RANGE = (-30.0, 20.0)  # LDM's clamp of log σ²: keeps exp(log σ²) finite in float32


@dataclass(frozen=True)
class AutoencoderConfig:
    """An ``AutoencoderKL`` (LDM's first stage). Lists (as TOML gives them) are accepted for tuples."""

    in_channels: int = 1  # image channels (1 grey, 3 RGB); the decoder outputs as many
    image_size: int = 28  # height (= width) of the training images; must be divisible by the factor f
    block_out_channels: tuple[int, ...] = (32, 64, 64)  # channels per level; f = 2^(levels − 1)
    layers_per_block: int = 1  # residual blocks per encoder level; decoder levels have one more
    latent_channels: int = 4  # channels c of the latent z (B, c, H/f, W/f)
    norm_num_groups: int = 8  # GroupNorm groups; must divide every block_out_channels entry
    mid_attention: bool = True  # self-attention between the two middle residual blocks (LDM's attn_1)
    norm_eps: float = 1e-6  # GroupNorm epsilon (LDM and diffusers' VAE: 1e-6)

    def __post_init__(self) -> None:
        object.__setattr__(self, "block_out_channels", tuple(self.block_out_channels))
        for name in ("in_channels", "image_size", "layers_per_block", "latent_channels", "norm_num_groups"):
            _check_positive(name, getattr(self, name))
        if not self.block_out_channels:
            raise ValueError("block_out_channels is empty; give one entry per level, e.g. (32, 64, 64)")
        for channels in self.block_out_channels:
            _check_positive("block_out_channels entry", channels)
            if channels % self.norm_num_groups:
                raise ValueError(
                    f"norm_num_groups {self.norm_num_groups} does not divide {channels} channels; it must "
                    f"divide every block_out_channels entry {self.block_out_channels}"
                )
        if not isinstance(self.mid_attention, bool):
            raise ValueError(f"mid_attention {self.mid_attention!r} must be true or false")
        if not (isinstance(self.norm_eps, (int, float)) and self.norm_eps > 0):
            raise ValueError(f"norm_eps {self.norm_eps!r} must be > 0")
        factor, levels = self.downsample_factor, len(self.block_out_channels)
        if self.image_size % factor:
            raise ValueError(
                f"image_size {self.image_size} cannot be halved {halvings(levels - 1)}: it must be "
                f"divisible by the downsample factor {factor} of block_out_channels {self.block_out_channels}"
            )

    @property
    def downsample_factor(self) -> int:
        """f: the encoder halves H and W once per level after the first."""
        return 2 ** (len(self.block_out_channels) - 1)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """(c, H/f, W/f) of one image of ``image_size``."""
        side = self.image_size // self.downsample_factor
        return (self.latent_channels, side, side)


def _check_positive(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} {value!r} must be a positive integer")


class DiagonalGaussian:
    """q(z|x) = N(mean, diag(exp(logvar))), per latent element; tensors shaped (B, c, h, w)."""

    def __init__(self, mean: Tensor, logvar: Tensor) -> None:
        self.mean = mean
        self.logvar = logvar.clamp(*LOGVAR_RANGE)
        self.std = torch.exp(0.5 * self.logvar)
        self.var = torch.exp(self.logvar)

    @classmethod
    def from_moments(cls, moments: Tensor) -> DiagonalGaussian:
        """From the encoder's (B, 2c, h, w) output: mean first, then log σ² (LDM's order)."""
        mean, logvar = moments.chunk(2, dim=1)
        return cls(mean, logvar)

    def sample(self, generator: torch.Generator | Sequence[torch.Generator] | None = None) -> Tensor:
        """z = mean + σ·ε (the reparameterisation trick, Kingma & Welling 2014 §2.4). ε is drawn on the
        generator's device with one generator for the batch, or one per sample (image i then gets the
        same noise at any batch size), as diffusers' ``randn_tensor``."""
        if generator is None or isinstance(generator, torch.Generator):
            device = self.mean.device if generator is None else generator.device
            noise = torch.randn(self.mean.shape, generator=generator, device=device, dtype=self.mean.dtype)
        else:
            if len(generator) != self.mean.shape[0]:
                raise ValueError(f"{len(generator)} generators for a batch of {self.mean.shape[0]}")
            one = (1, *self.mean.shape[1:])
            noise = torch.cat(
                [torch.randn(one, generator=g, device=g.device, dtype=self.mean.dtype) for g in generator]
            )
        return self.mean + self.std * noise.to(self.mean.device)

    def mode(self) -> Tensor:
        return self.mean

    def kl(self) -> Tensor:
        """KL(q(z|x) ‖ N(0, I)) per sample, (B,), summed over c, h, w as LDM does: the closed form
        ½ Σ (μ² + σ² − 1 − log σ²) of Kingma & Welling 2014, appendix B."""
        return 0.5 * (self.mean.square() + self.var - 1.0 - self.logvar).sum(dim=(1, 2, 3))

    def nll(self, z: Tensor) -> Tensor:
        """−log q(z|x) per sample, (B,), summed over c, h, w."""
        return 0.5 * (math.log(2.0 * math.pi) + self.logvar + (z - self.mean).square() / self.var).sum(
            dim=(1, 2, 3)
        )


class AutoencoderMiddle(nn.Module):
    """Residual block, self-attention (optional), residual block at the lowest resolution."""

    def __init__(self, channels: int, config: AutoencoderConfig) -> None:
        super().__init__()
        groups, eps = config.norm_num_groups, config.norm_eps
        self.block_1 = ResnetBlock(channels, channels, None, 0.0, groups, eps)
        self.attn_1 = AttnBlock(channels, 1, groups, eps) if config.mid_attention else None
        self.block_2 = ResnetBlock(channels, channels, None, 0.0, groups, eps)

    def forward(self, h: Tensor) -> Tensor:
        h = self.block_1(h)
        if self.attn_1 is not None:
            h = self.attn_1(h)
        return self.block_2(h)


class Encoder(nn.Module):
    """x (B, C, H, W) → (B, 2c, H/f, W/f), before quant_conv."""

    def __init__(self, config: AutoencoderConfig) -> None:
        super().__init__()
        channels, groups, eps = config.block_out_channels, config.norm_num_groups, config.norm_eps
        last = len(channels) - 1
        self.conv_in = nn.Conv2d(config.in_channels, channels[0], 3, padding=1)
        down, block_in = [], channels[0]
        for level, block_out in enumerate(channels):
            blocks = []
            for _ in range(config.layers_per_block):
                blocks.append(ResnetBlock(block_in, block_out, None, 0.0, groups, eps))
                block_in = block_out
            down.append(DownLevel(blocks, [], Downsample(block_out, True) if level != last else None))
        self.down = nn.ModuleList(down)
        self.mid = AutoencoderMiddle(block_in, config)
        self.norm_out = nn.GroupNorm(groups, block_in, eps=eps)
        self.conv_out = nn.Conv2d(block_in, 2 * config.latent_channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv_in(x)  # (B, ch[0], H, W)
        for level in self.down:
            for block in level.block:
                h = block(h)
            if level.downsample is not None:
                h = level.downsample(h)  # halve H, W
        h = self.mid(h)  # (B, ch[-1], H/f, W/f)
        return self.conv_out(norm_silu(self.norm_out, h))  # (B, 2c, H/f, W/f)


class Decoder(nn.Module):
    """z (B, c, H/f, W/f), after post_quant_conv → x̂ (B, C, H, W)."""

    def __init__(self, config: AutoencoderConfig) -> None:
        super().__init__()
        channels, groups, eps = config.block_out_channels, config.norm_num_groups, config.norm_eps
        block_in = channels[-1]
        self.conv_in = nn.Conv2d(config.latent_channels, block_in, 3, padding=1)
        self.mid = AutoencoderMiddle(block_in, config)
        up: list[nn.Module] = [nn.Identity()] * len(channels)
        for level in reversed(range(len(channels))):  # built bottom-up, stored by level (LDM's order)
            blocks = []
            for _ in range(config.layers_per_block + 1):
                blocks.append(ResnetBlock(block_in, channels[level], None, 0.0, groups, eps))
                block_in = channels[level]
            up[level] = UpLevel(blocks, [], Upsample(block_in, True) if level != 0 else None)
        self.up = nn.ModuleList(up)
        self.norm_out = nn.GroupNorm(groups, block_in, eps=eps)
        self.conv_out = nn.Conv2d(block_in, config.in_channels, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        h = self.mid(self.conv_in(z))  # (B, ch[-1], H/f, W/f)
        for level in reversed(self.up):
            for block in level.block:
                h = block(h)
            if level.upsample is not None:
                h = level.upsample(h)  # double H, W
        return self.conv_out(norm_silu(self.norm_out, h))  # (B, C, H, W)

    @property
    def last_layer(self) -> Tensor:
        """The decoder's last weight: LDM's adaptive GAN weight compares gradients there."""
        return self.conv_out.weight


class AutoencoderKL(nn.Module):
    """``AutoencoderKL(config)``: ``encode(x) -> DiagonalGaussian``, ``decode(z) -> x̂``,
    ``forward(x) -> (x̂, posterior)``. Any H, W divisible by ``config.downsample_factor`` work."""

    def __init__(self, config: AutoencoderConfig) -> None:
        super().__init__()
        self.config = config
        latent = config.latent_channels
        self.encoder = Encoder(config)
        self.quant_conv = nn.Conv2d(2 * latent, 2 * latent, 1)
        self.post_quant_conv = nn.Conv2d(latent, latent, 1)
        self.decoder = Decoder(config)

    def encode(self, x: Tensor) -> DiagonalGaussian:
        """q(z|x) for images x (B, C, H, W) in [−1, 1]."""
        self._check_input(x, self.config.in_channels, "image")
        return DiagonalGaussian.from_moments(self.quant_conv(self.encoder(x)))

    def decode(self, z: Tensor) -> Tensor:
        """x̂ (B, C, f·h, f·w) for latents z (B, c, h, w)."""
        self._check_input(z, self.config.latent_channels, "latent", factor=1)
        return self.decoder(self.post_quant_conv(z))

    def forward(
        self,
        x: Tensor,
        sample_posterior: bool = True,
        generator: torch.Generator | Sequence[torch.Generator] | None = None,
    ) -> tuple[Tensor, DiagonalGaussian]:
        """(x̂, q(z|x)): decode a sample of the posterior (training), or its mean."""
        posterior = self.encode(x)
        z = posterior.sample(generator) if sample_posterior else posterior.mode()
        return self.decode(z), posterior

    def _check_input(self, x: Tensor, channels: int, what: str, factor: int | None = None) -> None:
        factor = self.config.downsample_factor if factor is None else factor
        if x.ndim != 4 or x.shape[1] != channels:
            raise ValueError(
                f"{what} batch of shape {tuple(x.shape)} is not (B, {channels}, H, W); "
                f"this autoencoder takes {channels} {what} channels"
            )
        if x.shape[2] % factor or x.shape[3] % factor:
            raise ValueError(
                f"{what} size {tuple(x.shape[2:])} is not divisible by the downsample factor {factor}; "
                f"give H and W that are multiples of {factor}"
            )
