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

from ddpm.diffusion.samplers.common import Denoiser, call_model, predict_x0_eps_clipped
from ddpm.diffusion.samplers.spacing import SPACINGS, timesteps
from ddpm.diffusion.schedules import NoiseSchedule

SIGMA_SPACINGS: tuple[str, ...] = (*SPACINGS, "karras")
KARRAS_RHO = 7.0  # Karras et al. eq. 5: ρ = 7 balances the error of the first and last steps


def schedule_sigmas(schedule: NoiseSchedule) -> Tensor:
    """σ_t = √((1 − ᾱ_t)/ᾱ_t) for t = 0 … T−1, float64, ascending."""
    return ((1.0 - schedule.alpha_bar) / schedule.alpha_bar).sqrt()


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


def t_to_sigmas(t: Tensor, schedule: NoiseSchedule) -> Tensor:
    """:func:`t_to_sigma` of every element of ``t``: float64 on the CPU, ``t``'s shape."""
    log_sigmas = np.log(schedule_sigmas(schedule).numpy())
    levels = np.arange(len(log_sigmas), dtype=np.float64)
    return torch.from_numpy(np.exp(np.interp(t.detach().cpu().double().numpy(), levels, log_sigmas)))


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


def denoise(
    model: Denoiser,
    x_t: Tensor,
    level: SigmaStep,
    parameterization: str,
    clip_x0: float | None,
    cond: dict | None,
) -> Tensor:
    """D(x; σ) of Karras et al. §2: the x̂₀ (B, …) of the network called on the VP state x_t at t(σ).

    ᾱ = 1/(1 + σ²) converts the output (ε, x₀ or v) to x̂₀; ``clip_x0`` clamps it.
    """
    output = call_model_at(model, x_t, level.t, cond)
    alpha_bar = 1.0 / (1.0 + level.sigma**2)
    x0_pred, _ = predict_x0_eps_clipped(x_t, output, alpha_bar, parameterization, clip_x0)
    return x0_pred


def call_model_at(model: Denoiser, x_t: Tensor, t: float, cond: dict | None) -> Tensor:
    """The model at timestep t: int64 indices when t is an integer (as every other sampler passes),
    else a float tensor (float64 for float64 data, float32 otherwise: half precision would round t)."""
    if float(t).is_integer():
        return call_model(model, x_t, int(t), cond)
    t_dtype = torch.float64 if x_t.dtype == torch.float64 else torch.float32
    t_batch = torch.full((x_t.shape[0],), t, dtype=t_dtype, device=x_t.device)  # (B,)
    output = model(x_t, t_batch, **(cond or {}))
    if output.shape != x_t.shape:
        raise ValueError(
            f"model output has shape {tuple(output.shape)} but x_t has {tuple(x_t.shape)}; "
            "the samplers need a prediction of x_t's shape (no learned variance channels)"
        )
    return output
