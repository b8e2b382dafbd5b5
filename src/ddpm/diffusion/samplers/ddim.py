"""Denoising diffusion implicit models (Song, Meng, Ermon 2021), deterministic for η = 0."""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Sequence

import torch
from torch import Tensor

from ddpm.diffusion.process import check_parameterization
from ddpm.diffusion.samplers.common import (
    Denoiser,
    call_model,
    check_clip,
    initial_state,
    predict_x0_eps_clipped,
)
from ddpm.diffusion.samplers.result import SampleResult, TrajectoryRecorder
from ddpm.diffusion.samplers.spacing import respaced_chain, timesteps
from ddpm.diffusion.schedules import NoiseSchedule


def check_eta(eta: float) -> None:
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta={eta!r} is invalid; DDIM needs 0 ≤ eta ≤ 1 (0: deterministic, 1: DDPM)")


def ddim_step(
    x_t: Tensor,
    model_output: Tensor,
    alpha_bar: float,
    alpha_bar_prev: float,
    *,
    parameterization: str = "eps",
    eta: float = 0.0,
    clip_x0: float | None = None,
    noise: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """One DDIM step between ᾱ_t and ᾱ_prev (eq. 12); returns (x_prev, x̂₀).

    x_prev = √ᾱ_prev x̂₀ + √(1 − ᾱ_prev − σ²) ε̂ + σ z with σ = η √((1−ᾱ_prev)/(1−ᾱ_t)) √(1 − ᾱ_t/ᾱ_prev)
    (eq. 16). With η = 1, σ² is β̃' of the respaced chain and the step is ancestral sampling. With
    clipping, ε̂ is recomputed from the clamped x̂₀ (diffusers' ``use_clipped_model_output=True``).
    ``noise=None`` adds nothing (the sampler passes it where σ = 0).
    """
    check_eta(eta)
    x0_pred, eps_pred = predict_x0_eps_clipped(x_t, model_output, alpha_bar, parameterization, clip_x0)
    sigma = eta * math.sqrt((1.0 - alpha_bar_prev) / (1.0 - alpha_bar) * (1.0 - alpha_bar / alpha_bar_prev))
    direction = math.sqrt(max(1.0 - alpha_bar_prev - sigma**2, 0.0))  # coefficient of ε̂, "direction to x_t"
    x_prev = math.sqrt(alpha_bar_prev) * x0_pred + direction * eps_pred
    if noise is None:
        return x_prev, x0_pred
    return x_prev + sigma * noise, x0_pred


def ddim_sample(
    model: Denoiser,
    schedule: NoiseSchedule,
    shape_or_noise: tuple[int, ...] | Tensor,
    *,
    parameterization: str = "eps",
    steps: int = 50,
    eta: float = 0.0,
    spacing: str = "uniform",
    clip_x0: float | None = None,
    seeds: Sequence[int] | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    cond: dict | None = None,
    callback: Callable[[int, int, Tensor, Tensor], None] | None = None,
    trajectory_steps: str | Collection[int] | None = None,
) -> SampleResult:
    """DDIM sampling over ``timesteps(T, steps, spacing)``, ending at ᾱ = 1 (DDIM eq. 12).

    Each step goes to the next visited timestep (the DDIM repo's ``seq_next``). η = 0 is deterministic
    given x_T; η = 1 equals :func:`ancestral_sample` with ``variance="beta_tilde"`` on the same steps
    and seeds. Other arguments as for :func:`ancestral_sample`.
    """
    check_parameterization(parameterization)
    check_eta(eta)
    check_clip(clip_x0)
    chain = respaced_chain(schedule, timesteps(schedule.num_steps, steps, spacing))
    recorder = TrajectoryRecorder(trajectory_steps, [step.t for step in chain])
    x, generators = initial_state(shape_or_noise, seeds, device, dtype)  # x_T: (B, …)
    for i, (t, alpha_bar, alpha_bar_prev) in enumerate(chain):
        model_output = call_model(model, x, t, cond)
        stochastic = eta > 0 and i < len(chain) - 1  # σ = 0 at the last step, where ᾱ_prev = 1
        z = generators.randn(x.shape[1:], x.device, x.dtype) if stochastic else None
        x_prev, x0_pred = ddim_step(
            x, model_output, alpha_bar, alpha_bar_prev,
            parameterization=parameterization, eta=eta, clip_x0=clip_x0, noise=z,
        )  # fmt: skip
        recorder.record(t, x, x0_pred)
        if callback is not None:
            callback(i, t, x, x0_pred)
        x = x_prev
    recorder.finish(x)
    return SampleResult(samples=x, nfe=len(chain), trajectory=recorder.steps)
