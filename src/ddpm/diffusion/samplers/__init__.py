"""Samplers: plain functions over any denoiser ``denoiser(x_t, t, ᾱ, **cond) -> Prediction`` (x̂₀, ε̂)
(``ddpm.diffusion.prediction``: the parameterization, epsilon scaling and clipping wrap the network, so
no sampler knows what it predicts); one file per algorithm.

A learned variance (``Prediction.variance_frac``, Nichol & Dhariwal eq. 15) is used where the algorithm
has a Markovian reverse step to put it in: the ancestral sampler (and RePaint, built on its step). DDIM
at any η, DPM-Solver++ and the σ-samplers ignore it (see :func:`ddim_sample` for why).

Every sampler draws its noise from one generator per sample (``sample_seeds``, ``per_sample_noise``),
so image i is the same whatever the batch size, and returns a :class:`SampleResult`.
"""

from collections.abc import Callable

from ddpm.diffusion.samplers.ancestral import VARIANCES, ancestral_sample, ancestral_step
from ddpm.diffusion.samplers.ddim import ddim_sample, ddim_step
from ddpm.diffusion.samplers.dpm_solver import dpm_solver_pp_sample, dpm_solver_pp_sde_sample
from ddpm.diffusion.samplers.karras import euler_ancestral_sample, euler_sample, heun_sample
from ddpm.diffusion.samplers.noise import PerSampleGenerators, per_sample_noise, sample_seeds
from ddpm.diffusion.samplers.result import SampleResult, TrajectoryStep
from ddpm.diffusion.samplers.sigmas import SIGMA_SPACINGS
from ddpm.diffusion.samplers.spacing import SPACINGS, ChainStep, respaced_chain, timesteps

SAMPLERS: dict[str, Callable[..., SampleResult]] = {
    "ddpm": ancestral_sample,  # DDPM Algorithm 2
    "ddim": ddim_sample,  # Song et al. 2021, eq. 12
    "dpm++2m": dpm_solver_pp_sample,  # Lu et al. 2022b, multistep second order
    "dpm++2m_sde": dpm_solver_pp_sde_sample,  # Lu et al. 2022b, its SDE variant (App. B)
    "euler": euler_sample,  # Karras et al. 2022, Algorithm 1 (deterministic)
    "heun": heun_sample,  # Karras et al. 2022, Algorithm 1 with the 2nd-order correction
    "euler_a": euler_ancestral_sample,  # Euler with ancestral noise (k-diffusion)
}


# Samplers that walk the respaced chain of integer training timesteps: they take SPACINGS only; the
# σ samplers also take the Karras grid (SIGMA_SPACINGS).
TIMESTEP_SAMPLERS = ("ddpm", "ddim")


def spacings_for(sampler: str) -> tuple[str, ...]:
    """The ``spacing`` values ``SAMPLERS[sampler]`` accepts."""
    return SPACINGS if sampler in TIMESTEP_SAMPLERS else SIGMA_SPACINGS


__all__ = [
    "SAMPLERS",
    "SIGMA_SPACINGS",
    "SPACINGS",
    "TIMESTEP_SAMPLERS",
    "VARIANCES",
    "ChainStep",
    "PerSampleGenerators",
    "SampleResult",
    "TrajectoryStep",
    "ancestral_sample",
    "ancestral_step",
    "ddim_sample",
    "ddim_step",
    "dpm_solver_pp_sample",
    "dpm_solver_pp_sde_sample",
    "euler_ancestral_sample",
    "euler_sample",
    "heun_sample",
    "per_sample_noise",
    "respaced_chain",
    "sample_seeds",
    "spacings_for",
    "timesteps",
]
