"""Samplers: plain functions over any denoiser ``model(x_t, t, **cond)``; one file per algorithm.

Every sampler draws its noise from one generator per sample (``sample_seeds``, ``per_sample_noise``),
so image i is the same whatever the batch size, and returns a :class:`SampleResult`.
"""

from collections.abc import Callable

from ddpm.diffusion.samplers.ancestral import VARIANCES, ancestral_sample, ancestral_step
from ddpm.diffusion.samplers.ddim import ddim_sample, ddim_step
from ddpm.diffusion.samplers.noise import PerSampleGenerators, per_sample_noise, sample_seeds
from ddpm.diffusion.samplers.result import SampleResult, TrajectoryStep
from ddpm.diffusion.samplers.spacing import SPACINGS, ChainStep, respaced_chain, timesteps

SAMPLERS: dict[str, Callable[..., SampleResult]] = {"ddpm": ancestral_sample, "ddim": ddim_sample}

__all__ = [
    "SAMPLERS",
    "SPACINGS",
    "VARIANCES",
    "ChainStep",
    "PerSampleGenerators",
    "SampleResult",
    "TrajectoryStep",
    "ancestral_sample",
    "ancestral_step",
    "ddim_sample",
    "ddim_step",
    "per_sample_noise",
    "respaced_chain",
    "sample_seeds",
    "timesteps",
]
