"""The reverse process's variance Σ_θ(x_t, t) = σ_t² I: fixed (Ho et al. 2020, §3.2) or learned.

Fixed: σ_t² = β_t (``beta``) or β̃_t (``beta_tilde``, eq. 7). Learned in the range between them
(Nichol & Dhariwal 2021, eq. 15): the network outputs, besides its ε/x₀/v prediction, as many channels
v more, and

    Σ_θ(x_t, t) = exp(v log β_t + (1 − v) log β̃_t)   with v ∈ [0, 1] written here as ``variance_frac``,

the network's raw value r ∈ [−1, 1] mapped to v = (r + 1)/2 (improved-diffusion's ``LEARNED_RANGE``,
diffusers' ``variance_type="learned_range"``). Nothing clamps r: the range is what the network learns.

β̃₁ = 0, so log β̃ at t = 1 is clipped to log β̃₂ (improved-diffusion's ``posterior_log_variance_clipped``),
and the fixed ``beta`` choice also uses β̃₂ at t = 1, as Ho et al.'s code does "to get a better decoder log
likelihood". Samplers on a respaced chain interpolate between the chain's own β' and β̃' instead.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ddpm.diffusion.schedules import NoiseSchedule

FIXED_VARIANCES: tuple[str, ...] = ("beta", "beta_tilde")


def check_fixed_variance(variance: str) -> None:
    if variance not in FIXED_VARIANCES:
        raise ValueError(f"unknown variance {variance!r}; allowed: {', '.join(FIXED_VARIANCES)}")


def variance_frac_from_output(raw: Tensor) -> Tensor:
    """v = (r + 1)/2: the network's variance channels r (nominally in [−1, 1]) as eq. 15's weight."""
    return (raw + 1) / 2


def learned_range_log_variance(
    variance_frac: Tensor, log_beta: Tensor | float, log_beta_tilde: Tensor | float
) -> Tensor:
    """log Σ_θ = v log β + (1 − v) log β̃ (Nichol & Dhariwal eq. 15), elementwise; β, β̃ of the step taken."""
    return variance_frac * log_beta + (1 - variance_frac) * log_beta_tilde


def split_variance_channels(output: Tensor, x_t: Tensor) -> tuple[Tensor, Tensor]:
    """(prediction (B, C, …), raw variance channels r (B, C, …)) of a learned-variance output (B, 2C, …).

    The first C channels are the ε/x₀/v prediction, the last C the variance (improved-diffusion's
    ``th.split(model_output, C, dim=1)``, diffusers' ``DDPMScheduler.step``).
    """
    expected = (x_t.shape[0], 2 * x_t.shape[1], *x_t.shape[2:]) if x_t.ndim >= 2 else None
    if expected is None or tuple(output.shape) != expected:
        raise ValueError(
            f"model output has shape {tuple(output.shape)} but x_t has {tuple(x_t.shape)}; a learned-variance"
            f" model must output {expected} (its prediction's channels, then as many for the variance)"
        )
    prediction, raw = torch.split(output, x_t.shape[1], dim=1)
    return prediction, raw


def posterior_log_variance_clipped(schedule: NoiseSchedule) -> Tensor:
    """log β̃_t (T,), float64, with β̃₁ = 0 replaced by β̃₂ (improved-diffusion, Ho et al.'s code)."""
    _check_two_steps(schedule)
    beta_tilde = schedule.posterior_variance
    return torch.cat([beta_tilde[1:2], beta_tilde[1:]]).log()


def log_beta(schedule: NoiseSchedule) -> Tensor:
    """log β_t (T,), float64: the upper end of eq. 15's range."""
    return schedule.betas.log()


def fixed_log_variance(schedule: NoiseSchedule, variance: str) -> Tensor:
    """log σ_t² (T,), float64, for a fixed variance: β_t or β̃_t (§3.2), both β̃₂ at t = 1."""
    check_fixed_variance(variance)
    clipped = posterior_log_variance_clipped(schedule)
    if variance == "beta_tilde":
        return clipped
    return torch.cat([clipped[:1], log_beta(schedule)[1:]])


def reverse_log_variance(
    schedule: NoiseSchedule, t: Tensor, like: Tensor, variance: str, variance_frac: Tensor | None
) -> Tensor:
    """log Σ_θ at timestep indices ``t`` (B,), broadcastable to ``like`` (B, …), in ``like``'s dtype.

    Learned (eq. 15) where ``variance_frac`` is given (shape of ``like``), else the fixed ``variance``.
    """
    if variance_frac is None:
        return schedule.at(fixed_log_variance(schedule, variance), t, like)
    check_fixed_variance(variance)
    upper = schedule.at(log_beta(schedule), t, like)  # (B, 1, …)
    lower = schedule.at(posterior_log_variance_clipped(schedule), t, like)  # (B, 1, …)
    return learned_range_log_variance(variance_frac.to(like.dtype), upper, lower)


def _check_two_steps(schedule: NoiseSchedule) -> None:
    if schedule.num_steps < 2:
        raise ValueError(
            f"the schedule has T={schedule.num_steps}; the reverse variances at t = 1 need β̃₂, so T ≥ 2"
        )
