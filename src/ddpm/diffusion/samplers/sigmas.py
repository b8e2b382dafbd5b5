"""The σ view of a discrete VP schedule (Karras et al. 2022, "Elucidating the design space", §2, App. C.1).

x_t = √ᾱ (x₀ + σ n) with σ_t = √((1 − ᾱ_t)/ᾱ_t): the state x = x_t/√ᾱ = x_t √(1 + σ²) follows the
probability-flow ODE dx/dσ = (x − D(x; σ))/σ (Karras eq. 3 with s = 1). A discrete network knows only
the T noise levels σ_0 < … < σ_{T−1}; between them σ ↔ t is piecewise linear in log σ, as k-diffusion's
``DiscreteSchedule`` (t_to_sigma, sigma_to_t) and diffusers' ``_sigma_to_t`` do, so the network is
called at a fractional timestep t(σ) off the training grid.

Deliberate differences from diffusers: its DPMSolverMultistepScheduler rounds t(σ) of the karras grid
to integers (we keep it fractional, so the net's noise level is the σ used to convert its output); its
EulerDiscreteScheduler "linspace" timesteps are fractional with σ linear in t, a spacing we do not offer.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from ddpm.diffusion.prediction import Denoiser
from ddpm.diffusion.samplers.common import call_denoiser
from ddpm.diffusion.samplers.spacing import SPACINGS, timesteps
from ddpm.diffusion.schedules import NoiseSchedule, schedule_sigmas, t_to_sigmas

SIGMA_SPACINGS: tuple[str, ...] = (*SPACINGS, "karras")
KARRAS_RHO = 7.0  # Karras et al. eq. 5: ρ = 7 balances the error of the first and last steps


def karras_sigmas(sigma_min: float, sigma_max: float, n: int, rho: float = KARRAS_RHO) -> Tensor:
    """Karras et al. eq. 5: σ_i = (σ_max^{1/ρ} + i/(n−1) (σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ, i = 0 … n−1.

    Float64, descending, with the end points exactly σ_max and σ_min (n = 1 gives [σ_max]).
    """
    if not 0 < sigma_min < sigma_max:
        raise ValueError(
            f"sigma_min={sigma_min!r}, sigma_max={sigma_max!r} are invalid; need 0 < σ_min < σ_max"
        )
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    sigmas = (sigma_max ** (1 / rho) + ramp * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    sigmas[0] = sigma_max
    if n > 1:
        sigmas[-1] = sigma_min
    return sigmas


def sigma_to_t(sigma: float, schedule: NoiseSchedule) -> float:
    """The fractional timestep of σ: piecewise linear in log σ between the T discrete levels, clamped
    to [0, T − 1] (k-diffusion ``DiscreteSchedule.sigma_to_t``; diffusers ``_sigma_to_t``)."""
    log_sigmas = np.log(schedule_sigmas(schedule).numpy())
    # np.log on both sides: a knot σ_t maps back to exactly t (np.interp is exact at its knots).
    return float(np.interp(np.log(sigma), log_sigmas, np.arange(len(log_sigmas), dtype=np.float64)))


def t_to_sigma(t: float, schedule: NoiseSchedule) -> float:
    """σ at a fractional timestep: the inverse of :func:`sigma_to_t` (k-diffusion ``t_to_sigma``)."""
    return float(t_to_sigmas(torch.tensor([float(t)], dtype=torch.float64), schedule)[0])


class SigmaStep(NamedTuple):
    """One noise level a σ-sampler visits: σ, and the (possibly fractional) timestep the net sees."""

    sigma: float
    t: float


def sampling_sigmas(schedule: NoiseSchedule, steps: int, spacing: str = "karras") -> list[SigmaStep]:
    """The ``steps`` noise levels σ_0 > … > σ_{S−1} a σ-sampler visits; after them comes σ = 0.

    ``karras``: eq. 5 with ρ = 7 between σ_min = σ_0 and σ_max = σ_{T−1} of the schedule (diffusers'
    ``use_karras_sigmas``), at fractional timesteps. ``uniform``, ``trailing``, ``quadratic``: the σ of
    :func:`timesteps` (integer timesteps, so the net sees exactly its training levels).
    """
    if spacing not in SIGMA_SPACINGS:
        raise ValueError(f"unknown spacing {spacing!r}; allowed: {', '.join(SIGMA_SPACINGS)}")
    T = schedule.num_steps
    if spacing != "karras":
        sigmas = schedule_sigmas(schedule)
        return [SigmaStep(float(sigmas[t]), float(t)) for t in timesteps(T, steps, spacing).tolist()]
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps={steps!r} is invalid; it must be an integer ≥ 1")
    if T < 2:
        raise ValueError(f"the karras spacing needs a schedule with T ≥ 2 noise levels, got T={T}")
    sigmas = schedule_sigmas(schedule)
    grid = karras_sigmas(float(sigmas[0]), float(sigmas[-1]), steps).tolist()
    return [SigmaStep(sigma, sigma_to_t(sigma, schedule)) for sigma in grid]


def nearest_timestep(t: float) -> int:
    """The integer timestep that callbacks and trajectories report for a fractional one."""
    return round(t)


def denoise(denoiser: Denoiser, x_t: Tensor, level: SigmaStep, cond: dict | None) -> Tensor:
    """D(x; σ) of Karras et al. §2: the x̂₀ (B, …) of the denoiser on the VP state x_t at t(σ), told
    ᾱ = 1/(1 + σ²), the level this sampler integrates at (so x̂₀ is read at the σ of its update)."""
    return call_denoiser(denoiser, x_t, level.t, 1.0 / (1.0 + level.sigma**2), cond).x0
