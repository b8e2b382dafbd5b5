"""Denoising networks: nn.Modules that know shapes, not schedules.

Every denoising network is called as ``net(x_t, t, class_labels=None)`` with t the 0-based timestep
indices (B,) (int or float) or a scalar, and returns a tensor shaped like x_t. The autoencoder of latent
diffusion (:class:`AutoencoderKL`) is built the same way from its config, but is a codec, not a denoiser.
"""

from __future__ import annotations

from torch import nn

from ddpm.nets.autoencoder import AutoencoderConfig, AutoencoderKL, DiagonalGaussian
from ddpm.nets.configs import UNET_PRESETS, MLPConfig, UNetConfig
from ddpm.nets.controlnet import ControlBranch, ControlledUNet, ControlNetConfig
from ddpm.nets.mlp import MLPDenoiser
from ddpm.nets.unet import UNet


def build_net(config: UNetConfig | MLPConfig | AutoencoderConfig) -> UNet | MLPDenoiser | AutoencoderKL:
    """The network a config describes: UNetConfig -> UNet, MLPConfig -> MLPDenoiser,
    AutoencoderConfig -> AutoencoderKL."""
    if isinstance(config, AutoencoderConfig):
        return AutoencoderKL(config)
    if isinstance(config, UNetConfig):
        return UNet(config)
    if isinstance(config, MLPConfig):
        return MLPDenoiser(config)
    raise ValueError(
        f"cannot build a network from {type(config).__name__}; "
        "give a UNetConfig, MLPConfig or AutoencoderConfig"
    )


def count_parameters(module: nn.Module) -> int:
    """Number of scalar parameters (each shared tensor counted once)."""
    return sum(p.numel() for p in module.parameters())


__all__ = [
    "UNET_PRESETS",
    "AutoencoderConfig",
    "AutoencoderKL",
    "ControlBranch",
    "ControlNetConfig",
    "ControlledUNet",
    "DiagonalGaussian",
    "MLPConfig",
    "MLPDenoiser",
    "UNet",
    "UNetConfig",
    "build_net",
    "count_parameters",
]
