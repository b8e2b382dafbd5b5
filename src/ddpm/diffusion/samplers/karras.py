"""Euler and Heun on the probability-flow ODE in σ (Karras et al. 2022, Alg. 1; Alg. 2 with S_churn = 0),
and Euler ancestral (k-diffusion ``sample_euler_ancestral``).

The state is x = x_t/√ᾱ = x_t √(1 + σ²) and dx/dσ = (x − D(x; σ))/σ (eq. 3 with s(t) = 1, σ(t) = t).
x_T, given or drawn, is the VP state at the first level σ_0, so x = x_T √(1 + σ_0²) starts every run
where DDIM with the same x_T starts (diffusers' Euler/Heun start from σ_0 n instead, for the
"linspace"/"trailing"/karras grids: a factor 1 + 1/(2σ_0²), 2e-5 at σ_0 = 157 for DDPM's schedule).
Callbacks and trajectories get the VP state x_t = x/√(1 + σ²) and the nearest integer timestep.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Sequence

import torch
from torch import Tensor

from ddpm.diffusion.prediction import Denoiser
from ddpm.diffusion.samplers.common import initial_state
from ddpm.diffusion.samplers.noise import PerSampleGenerators
from ddpm.diffusion.samplers.result import SampleResult, TrajectoryRecorder
from ddpm.diffusion.samplers.sigmas import SigmaStep, denoise, nearest_timestep, sampling_sigmas
from ddpm.diffusion.schedules import NoiseSchedule

Callback = Callable[[int, int, Tensor, Tensor], None]


def ancestral_sigmas(sigma: float, sigma_next: float) -> tuple[float, float]:
    """(σ_down, σ_up) of an ancestral step σ → σ_next with η = 1 (k-diffusion ``get_ancestral_step``):
    σ_up² = σ_next² (σ² − σ_next²)/σ², σ_down² = σ_next² − σ_up²; σ_down² + σ_up² = σ_next²."""
    sigma_up = math.sqrt(sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2)
    return math.sqrt(sigma_next**2 - sigma_up**2), sigma_up


def _sample(
    method: str,
    denoiser: Denoiser,
    schedule: NoiseSchedule,
    shape_or_noise: tuple[int, ...] | Tensor,
    *,
    steps: int,
    spacing: str,
    seeds: Sequence[int] | None,
    device: torch.device | str | None,
    dtype: torch.dtype,
    cond: dict | None,
    callback: Callback | None,
    trajectory_steps: str | Collection[int] | None,
) -> SampleResult:
    """The shared loop of Alg. 1: an Euler step, then Heun's correction or the ancestral noise."""
    levels = sampling_sigmas(schedule, steps, spacing)
    recorder = TrajectoryRecorder(trajectory_steps, [nearest_timestep(level.t) for level in levels])
    x_T, generators = initial_state(shape_or_noise, seeds, device, dtype)  # (B, …)
    x = x_T * math.sqrt(1.0 + levels[0].sigma ** 2)  # σ-space state x = x_t/√ᾱ

    def denoised(x: Tensor, level: SigmaStep) -> Tensor:  # D(x; σ) from the VP state x/√(1 + σ²)
        return denoise(denoiser, x / math.sqrt(1.0 + level.sigma**2), level, cond)

    nfe = 0
    for i, level in enumerate(levels):
        sigma = level.sigma
        x0_pred = denoised(x, level)  # (B, …)
        nfe += 1
        x_t = x / math.sqrt(1.0 + sigma**2)
        recorder.record(nearest_timestep(level.t), x_t, x0_pred)
        if callback is not None:
            callback(i, nearest_timestep(level.t), x_t, x0_pred)
        last = i + 1 == len(levels)
        sigma_next = 0.0 if last else levels[i + 1].sigma
        slope = (x - x0_pred) / sigma  # d_i = (x − D(x; σ_i))/σ_i, Alg. 1 line 4
        if method == "euler_ancestral":
            sigma_down, sigma_up = ancestral_sigmas(sigma, sigma_next)
            x = x + (sigma_down - sigma) * slope
            if not last:  # σ_up = 0 at the last step, where σ_next = 0
                x = x + sigma_up * _noise(generators, x)
        elif method == "heun" and not last:  # Alg. 1 lines 7–8: trapezoidal correction if σ_next ≠ 0
            x_euler = x + (sigma_next - sigma) * slope
            slope_next = (x_euler - denoised(x_euler, levels[i + 1])) / sigma_next
            nfe += 1
            x = x + (sigma_next - sigma) * 0.5 * (slope + slope_next)
        else:  # Euler, and Heun's last step to σ = 0
            x = x + (sigma_next - sigma) * slope
    recorder.finish(x)
    return SampleResult(samples=x, nfe=nfe, trajectory=recorder.steps)


def _noise(generators: PerSampleGenerators, like: Tensor) -> Tensor:
    return generators.randn(tuple(like.shape[1:]), like.device, like.dtype)


def euler_sample(
    denoiser: Denoiser,
    schedule: NoiseSchedule,
    shape_or_noise: tuple[int, ...] | Tensor,
    *,
    steps: int = 50,
    spacing: str = "karras",
    seeds: Sequence[int] | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    cond: dict | None = None,
    callback: Callback | None = None,
    trajectory_steps: str | Collection[int] | None = None,
) -> SampleResult:
    """Euler's method on the PF-ODE (Karras et al. Alg. 1 without line 7–8): x ← x + (σ_{i+1} − σ_i) d_i.

    Over ``sampling_sigmas(schedule, steps, spacing)`` (ρ = 7 grid by default), then to σ = 0; NFE =
    steps; deterministic given x_T. Matches diffusers' ``EulerDiscreteScheduler`` (see the module note
    on the starting point). Other arguments as for :func:`ddim_sample`.
    """
    return _sample(
        "euler", denoiser, schedule, shape_or_noise, steps=steps, spacing=spacing, seeds=seeds,
        device=device, dtype=dtype, cond=cond, callback=callback, trajectory_steps=trajectory_steps,
    )  # fmt: skip


def heun_sample(
    denoiser: Denoiser,
    schedule: NoiseSchedule,
    shape_or_noise: tuple[int, ...] | Tensor,
    *,
    steps: int = 25,
    spacing: str = "karras",
    seeds: Sequence[int] | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    cond: dict | None = None,
    callback: Callback | None = None,
    trajectory_steps: str | Collection[int] | None = None,
) -> SampleResult:
    """Heun's second-order method on the PF-ODE (Karras et al. Alg. 1; Alg. 2 with S_churn = 0).

    Each step to σ_{i+1} > 0 averages the slope at σ_i with the slope at the Euler guess at σ_{i+1};
    the last step, to σ = 0, is an Euler step. NFE = 2·steps − 1. Matches diffusers'
    ``HeunDiscreteScheduler``. Other arguments as for :func:`euler_sample`.
    """
    return _sample(
        "heun", denoiser, schedule, shape_or_noise, steps=steps, spacing=spacing, seeds=seeds,
        device=device, dtype=dtype, cond=cond, callback=callback, trajectory_steps=trajectory_steps,
    )  # fmt: skip


def euler_ancestral_sample(
    denoiser: Denoiser,
    schedule: NoiseSchedule,
    shape_or_noise: tuple[int, ...] | Tensor,
    *,
    steps: int = 50,
    spacing: str = "karras",
    seeds: Sequence[int] | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    cond: dict | None = None,
    callback: Callback | None = None,
    trajectory_steps: str | Collection[int] | None = None,
) -> SampleResult:
    """Euler ancestral (k-diffusion ``sample_euler_ancestral``, η = 1): an Euler step down to σ_down,
    then fresh noise σ_up z from each sample's own generator; σ_down² + σ_up² = σ_{i+1}².

    NFE = steps. Matches diffusers' ``EulerAncestralDiscreteScheduler`` given per-sample generators.
    Other arguments as for :func:`euler_sample`.
    """
    return _sample(
        "euler_ancestral", denoiser, schedule, shape_or_noise, steps=steps, spacing=spacing, seeds=seeds,
        device=device, dtype=dtype, cond=cond, callback=callback, trajectory_steps=trajectory_steps,
    )  # fmt: skip
