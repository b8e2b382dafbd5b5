"""DPM-Solver++(2M): the multistep second-order solver of the diffusion ODE in data-prediction form
(Lu et al. 2022b, "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion Probabilistic Models", Alg. 2),
and its SDE variant SDE-DPM-Solver++(2M) (same paper, App. B; diffusers ``sde-dpmsolver++``,
k-diffusion ``sample_dpmpp_2m_sde``).

In VP terms α = √ᾱ, σ_vp = √(1 − ᾱ), λ = log(α/σ_vp) = −log σ with σ = σ_vp/α. The exact solution
x_t = (σ_vp,t/σ_vp,s) x_s + σ_vp,t ∫ e^λ x̂₀(λ) dλ (eq. 9) is integrated with x̂₀ linear in λ through the
last two model outputs. The SDE variant integrates the reverse SDE the same way: the linear part decays
by an extra e^{−h}, x̂₀ enters with weight α(1 − e^{−2h}), and fresh noise σ_vp √(1 − e^{−2h}) z is added;
it forgets the errors of earlier steps, which helps imperfect models at a moderate NFE.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Sequence
from typing import Any

import torch
from torch import Tensor

from ddpm.diffusion.prediction import Denoiser
from ddpm.diffusion.samplers.common import initial_state
from ddpm.diffusion.samplers.result import SampleResult, TrajectoryRecorder
from ddpm.diffusion.samplers.sigmas import denoise, nearest_timestep, sampling_sigmas
from ddpm.diffusion.schedules import NoiseSchedule


def check_eta(eta: float) -> None:
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta={eta!r} is invalid; DPM-Solver++ needs 0 ≤ eta ≤ 1 (0: ODE, 1: SDE)")


def dpm_solver_pp_update(
    x_t: Tensor,
    x0_pred: Tensor,
    sigma: float,
    sigma_next: float,
    *,
    x0_prev: Tensor | None = None,
    sigma_prev: float | None = None,
    eta: float = 0.0,
    noise: Tensor | None = None,
) -> Tensor:
    """One DPM-Solver++ step of the VP state x_t from σ to σ_next (σ = √((1−ᾱ)/ᾱ) of each level).

    Without history (``x0_prev=None``), first order, which is DDIM (eq. 11 of Lu et al. 2022b):
    x_next = (σ_vp,next/σ_vp) x_t − α_next (e^{−h} − 1) x̂₀ with h = λ_next − λ = log(σ/σ_next).
    With the previous level's x̂₀ and σ, the 2M update (Alg. 2): x̂₀ is replaced by
    D = (1 + 1/(2r)) x̂₀ − 1/(2r) x̂₀_prev, r = h_prev/h. σ_next = 0 gives x̂₀ (the limit h → ∞).
    ``eta`` = 1 is the SDE step (midpoint form, as diffusers' default ``solver_type``):
    x_next = (σ_vp,next/σ_vp) e^{−h} x_t − α_next (e^{−2h} − 1) D + σ_vp,next √(1 − e^{−2h}) z, with z =
    ``noise`` (None adds nothing); 0 < η < 1 interpolates as k-diffusion's ``eta`` (e^{−ηh}, e^{−(1+η)h}).
    """
    check_eta(eta)
    if sigma_next == 0.0:
        return x0_pred
    alpha_next = 1.0 / math.sqrt(1.0 + sigma_next**2)
    ratio = sigma_next / sigma * math.sqrt(1.0 + sigma**2) * alpha_next  # σ_vp,next / σ_vp
    h = math.log(sigma / sigma_next)
    if x0_prev is None:
        data_term = x0_pred
    else:
        if sigma_prev is None:
            raise ValueError("x0_prev given without sigma_prev; the 2M step needs the previous level's σ")
        half_inv_r = 0.5 * h / math.log(sigma_prev / sigma)  # 1/(2r)
        data_term = (1.0 + half_inv_r) * x0_pred - half_inv_r * x0_prev
    x_next = ratio * math.exp(-eta * h) * x_t - alpha_next * math.expm1(-(1.0 + eta) * h) * data_term
    if eta == 0.0 or noise is None:
        return x_next
    sigma_vp_next = sigma_next * alpha_next
    return x_next + sigma_vp_next * math.sqrt(-math.expm1(-2.0 * eta * h)) * noise


def dpm_solver_pp_sample(
    denoiser: Denoiser,
    schedule: NoiseSchedule,
    shape_or_noise: tuple[int, ...] | Tensor,
    *,
    steps: int = 20,
    spacing: str = "karras",
    eta: float = 0.0,
    seeds: Sequence[int] | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    cond: dict | None = None,
    callback: Callable[[int, int, Tensor, Tensor], None] | None = None,
    trajectory_steps: str | Collection[int] | None = None,
) -> SampleResult:
    """DPM-Solver++(2M) over ``sampling_sigmas(schedule, steps, spacing)``, then to σ = 0; NFE = steps.

    The first step is first order (no history) and so is the last (to σ = 0, it returns x̂₀): the
    "lower order final" of diffusers' ``DPMSolverMultistepScheduler`` with ``final_sigmas_type="zero"``.
    ``eta=0`` solves the ODE, deterministic given x_T (``shape_or_noise``/``seeds`` only make x_T, as in
    :func:`ddim_sample`); ``eta=1`` is SDE-DPM-Solver++(2M), whose step noise z comes from each sample's
    own generator (none on the last step, which returns x̂₀).
    With ``spacing="karras"`` the net is called at fractional timesteps t(σ) (k-diffusion), where
    diffusers rounds them to integers. ``callback(i, t, x_t, x̂₀)`` and ``trajectory_steps`` report the
    nearest integer t. Other arguments as for :func:`ancestral_sample`.
    """
    check_eta(eta)
    levels = sampling_sigmas(schedule, steps, spacing)
    recorder = TrajectoryRecorder(trajectory_steps, [nearest_timestep(level.t) for level in levels])
    x, generators = initial_state(shape_or_noise, seeds, device, dtype)  # x_T: (B, …), the VP state at σ_0
    x0_prev, sigma_prev = None, None
    for i, level in enumerate(levels):
        x0_pred = denoise(denoiser, x, level, cond)  # (B, …)
        recorder.record(nearest_timestep(level.t), x, x0_pred)
        if callback is not None:
            callback(i, nearest_timestep(level.t), x, x0_pred)
        sigma_next = levels[i + 1].sigma if i + 1 < len(levels) else 0.0
        z = generators.randn(x.shape[1:], x.device, x.dtype) if eta > 0 and sigma_next > 0 else None
        x = dpm_solver_pp_update(
            x, x0_pred, level.sigma, sigma_next, x0_prev=x0_prev, sigma_prev=sigma_prev, eta=eta, noise=z
        )
        x0_prev, sigma_prev = x0_pred, level.sigma
    recorder.finish(x)
    return SampleResult(samples=x, nfe=len(levels), trajectory=recorder.steps)


def dpm_solver_pp_sde_sample(
    denoiser: Denoiser,
    schedule: NoiseSchedule,
    shape_or_noise: tuple[int, ...] | Tensor,
    **options: Any,
) -> SampleResult:
    """SDE-DPM-Solver++(2M): :func:`dpm_solver_pp_sample` with ``eta=1`` (diffusers'
    ``DPMSolverMultistepScheduler(algorithm_type="sde-dpmsolver++")``); NFE = steps."""
    return dpm_solver_pp_sample(denoiser, schedule, shape_or_noise, **{"eta": 1.0, **options})
