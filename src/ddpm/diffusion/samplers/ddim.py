"""Denoising diffusion implicit models (Song, Meng, Ermon 2021), deterministic for η = 0."""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Sequence

import torch
from torch import Tensor

from ddpm.diffusion.prediction import Denoiser, Prediction
from ddpm.diffusion.samplers.common import call_denoiser, initial_state
from ddpm.diffusion.samplers.result import SampleResult, TrajectoryRecorder
from ddpm.diffusion.samplers.spacing import respaced_chain, timesteps
from ddpm.diffusion.schedules import NoiseSchedule


def check_eta(eta: float) -> None:
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta={eta!r} is invalid; DDIM needs 0 ≤ eta ≤ 1 (0: deterministic, 1: DDPM)")


def ddim_step(
    x_t: Tensor,
    prediction: Prediction,
    alpha_bar: float,
    alpha_bar_prev: float,
    *,
    eta: float = 0.0,
    noise: Tensor | None = None,
) -> Tensor:
    """One DDIM step between ᾱ_t and ᾱ_prev (eq. 12) from the denoiser's (x̂₀, ε̂) at ᾱ_t; returns x_prev.

    x_prev = √ᾱ_prev x̂₀ + √(1 − ᾱ_prev − σ²) ε̂ + σ z with σ = η √((1−ᾱ_prev)/(1−ᾱ_t)) √(1 − ᾱ_t/ᾱ_prev)
    (eq. 16). With η = 1, σ² is β̃' of the respaced chain and the step is ancestral sampling. A clipped
    x̂₀ comes with the ε̂ recomputed from it (diffusers' ``use_clipped_model_output=True``).
    ``noise=None`` adds nothing (the sampler passes it where σ = 0).
    """
    check_eta(eta)
    x0_pred, eps_pred = prediction
    sigma = eta * math.sqrt((1.0 - alpha_bar_prev) / (1.0 - alpha_bar) * (1.0 - alpha_bar / alpha_bar_prev))
    direction = math.sqrt(max(1.0 - alpha_bar_prev - sigma**2, 0.0))  # coefficient of ε̂, "direction to x_t"
    x_prev = math.sqrt(alpha_bar_prev) * x0_pred + direction * eps_pred
    if noise is None:
        return x_prev
    return x_prev + sigma * noise


def ddim_sample(
    denoiser: Denoiser,
    schedule: NoiseSchedule,
    shape_or_noise: tuple[int, ...] | Tensor,
    *,
    steps: int = 50,
    eta: float = 0.0,
    spacing: str = "uniform",
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

    A learned variance (the Prediction's ``variance_frac``) is ignored at every η, as improved-diffusion's
    ``ddim_sample`` and diffusers' ``DDIMScheduler`` ignore it: σ_t(η) of eq. 16 picks a member of a family
    of non-Markovian processes with q's marginals, while Σ_θ estimates the reverse variance of the Markovian
    chain (η = 1) only, and can exceed 1 − ᾱ_prev, which eq. 12 needs σ² below. For sampling with it, use
    :func:`ancestral_sample`.
    """
    check_eta(eta)
    chain = respaced_chain(schedule, timesteps(schedule.num_steps, steps, spacing))
    recorder = TrajectoryRecorder(trajectory_steps, [step.t for step in chain])
    x, generators = initial_state(shape_or_noise, seeds, device, dtype)  # x_T: (B, …)
    for i, (t, alpha_bar, alpha_bar_prev) in enumerate(chain):
        prediction = call_denoiser(denoiser, x, t, alpha_bar, cond)  # (x̂₀, ε̂) at ᾱ_t
        stochastic = eta > 0 and i < len(chain) - 1  # σ = 0 at the last step, where ᾱ_prev = 1
        z = generators.randn(x.shape[1:], x.device, x.dtype) if stochastic else None
        x_prev = ddim_step(x, prediction, alpha_bar, alpha_bar_prev, eta=eta, noise=z)
        recorder.record(t, x, prediction.x0)
        if callback is not None:
            callback(i, t, x, prediction.x0)
        x = x_prev
    recorder.finish(x)
    return SampleResult(samples=x, nfe=len(chain), trajectory=recorder.steps)
