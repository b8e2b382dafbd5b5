"""Ancestral sampling, DDPM Algorithm 2 (Ho et al. 2020), on the full or a respaced chain."""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Sequence

import torch
from torch import Tensor

from ddpm.diffusion.prediction import Denoiser
from ddpm.diffusion.samplers.common import call_denoiser, initial_state
from ddpm.diffusion.samplers.result import SampleResult, TrajectoryRecorder
from ddpm.diffusion.samplers.spacing import respaced_chain, timesteps
from ddpm.diffusion.schedules import NoiseSchedule
from ddpm.diffusion.variances import learned_range_log_variance

VARIANCES: tuple[str, ...] = ("beta", "beta_tilde")


def check_variance(variance: str) -> None:
    if variance not in VARIANCES:
        raise ValueError(f"unknown variance {variance!r}; allowed: {', '.join(VARIANCES)}")


def ancestral_step(
    x_t: Tensor,
    x0_pred: Tensor,
    alpha_bar: float,
    alpha_bar_prev: float,
    *,
    variance: str = "beta",
    noise: Tensor | None = None,
    variance_frac: Tensor | None = None,
) -> Tensor:
    """One step x_t → x_{t−1} of Algorithm 2 between ᾱ_t and ᾱ_prev from the denoiser's x̂₀; returns x_{t−1}.

    x_{t−1} = μ̃(x̂₀, x_t) + σ z with the posterior mean of eq. 7 and β' = 1 − ᾱ_t/ᾱ_prev (β_t on the
    full chain). For an unclipped x̂₀(ε̂), μ̃(x̂₀, x_t) is Algorithm 2's (x_t − β'/√(1−ᾱ_t) ε̂)/√(1−β')
    (eq. 11). σ² = β' (``beta``) or β̃' = (1−ᾱ_prev)/(1−ᾱ_t) β' (``beta_tilde``), §3.2; with a learned
    ``variance_frac`` v (B, …), σ² = exp(v log β' + (1 − v) log β̃') elementwise (Nichol & Dhariwal
    eq. 15 on the respaced chain, β̃' floored at 1e-20 as diffusers' ``learned_range``), and ``variance``
    is not used. ``noise=None`` adds nothing: Algorithm 2's z = 0 at the last step.
    """
    check_variance(variance)
    beta = 1.0 - alpha_bar / alpha_bar_prev  # β' of the respaced chain
    coef_x0 = math.sqrt(alpha_bar_prev) * beta / (1.0 - alpha_bar)
    coef_xt = math.sqrt(1.0 - beta) * (1.0 - alpha_bar_prev) / (1.0 - alpha_bar)
    mean = coef_x0 * x0_pred + coef_xt * x_t  # μ̃(x̂₀, x_t), eq. 7
    if noise is None:
        return mean
    beta_tilde = beta * (1.0 - alpha_bar_prev) / (1.0 - alpha_bar)
    if variance_frac is not None:
        log_beta_tilde = math.log(max(beta_tilde, 1e-20))  # β̃' = 0 at the last step
        log_variance = learned_range_log_variance(variance_frac, math.log(beta), log_beta_tilde)
        return mean + torch.exp(0.5 * log_variance) * noise
    sigma_sq = beta if variance == "beta" else beta_tilde
    return mean + math.sqrt(sigma_sq) * noise


def ancestral_sample(
    denoiser: Denoiser,
    schedule: NoiseSchedule,
    shape_or_noise: tuple[int, ...] | Tensor,
    *,
    steps: int | None = None,
    spacing: str = "uniform",
    variance: str = "beta",
    seeds: Sequence[int] | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    cond: dict | None = None,
    callback: Callable[[int, int, Tensor, Tensor], None] | None = None,
    trajectory_steps: str | Collection[int] | None = None,
) -> SampleResult:
    """DDPM Algorithm 2: from x_T ~ N(0, I), x_{t−1} = μ̃(x̂₀, x_t) + σ_t z down to x₀.

    ``steps=None`` runs all T steps; ``steps=S < T`` runs the respaced chain over ``timesteps(T, S,
    spacing)`` (improved-diffusion's respacing, diffusers' ``DDPMScheduler`` with
    ``num_inference_steps``). ``variance``: σ² = β (default, diffusers ``fixed_large``) or β̃
    (``fixed_small``); a denoiser with a learned variance (its Prediction's ``variance_frac``) uses that
    instead (diffusers ``learned_range``, improved-diffusion ``p_sample``). No noise is added at the
    last step. ``denoiser(x_t, t, ᾱ_t, **cond)`` gives (x̂₀, ε̂) (``prediction.Parameterized`` wraps a
    network; clipping x̂₀ is its ``clip_x0``).
    ``shape_or_noise``: (B, …) to draw x_T from per-sample generators seeded by ``seeds``
    (default ``sample_seeds(0, B)``) on ``device`` in ``dtype``, or x_T itself (moved to ``device``
    if given); each step's z comes from the same generators, so image i ignores the batch size.
    ``callback(i, t, x_t, x̂₀)`` runs after the model call of step i; ``trajectory_steps`` (None,
    ``"all"`` or timesteps, −1 for the result) selects the CPU copies kept in the result.
    """
    check_variance(variance)
    chain = respaced_chain(
        schedule, timesteps(schedule.num_steps, schedule.num_steps if steps is None else steps, spacing)
    )
    recorder = TrajectoryRecorder(trajectory_steps, [step.t for step in chain])
    x, generators = initial_state(shape_or_noise, seeds, device, dtype)  # x_T: (B, …)
    for i, (t, alpha_bar, alpha_bar_prev) in enumerate(chain):
        prediction = call_denoiser(denoiser, x, t, alpha_bar, cond)
        x0_pred = prediction.x0  # (B, …)
        z = generators.randn(x.shape[1:], x.device, x.dtype) if i < len(chain) - 1 else None
        x_prev = ancestral_step(x, x0_pred, alpha_bar, alpha_bar_prev, variance=variance, noise=z,
                                variance_frac=prediction.variance_frac)  # fmt: skip
        recorder.record(t, x, x0_pred)
        if callback is not None:
            callback(i, t, x, x0_pred)
        x = x_prev
    recorder.finish(x)
    return SampleResult(samples=x, nfe=len(chain), trajectory=recorder.steps)
