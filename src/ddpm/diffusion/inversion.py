"""DDIM inversion (Song, Meng, Ermon 2021, §4.3 and §5.4), reconstruction, and spherical interpolation.

With η = 0, DDIM sampling is a discretised ODE (eq. 14), so it can be run the other way: from an
image x₀ up to the x_T that DDIM would map back to x₀. Running the same steps down again reconstructs
x₀, up to the error of evaluating ε̂ at the step's start instead of its end.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from ddpm.diffusion.prediction import Denoiser
from ddpm.diffusion.samplers.common import call_denoiser
from ddpm.diffusion.samplers.ddim import ddim_sample
from ddpm.diffusion.samplers.spacing import respaced_chain, timesteps
from ddpm.diffusion.schedules import NoiseSchedule


def ddim_invert(
    denoiser: Denoiser,
    schedule: NoiseSchedule,
    x0: Tensor,
    *,
    steps: int = 50,
    spacing: str = "uniform",
    cond: dict | None = None,
    callback: Callable[[int, int, Tensor], None] | None = None,
) -> Tensor:
    """x₀ (B, …) → the x_T (B, …) that ``ddim_sample(…, steps, spacing, eta=0)`` maps back to x₀.

    Walks the sampler's respaced chain t_{S−1} < … < t_0 upwards, one DDIM step (eq. 12, η = 0) per
    timestep with the roles of ᾱ and ᾱ_prev swapped:
    x_{t_i} = √ᾱ_{t_i} x̂₀ + √(1 − ᾱ_{t_i}) ε̂,  x̂₀ = (x_{t_{i+1}} − √(1 − ᾱ_{t_{i+1}}) ε̂) / √ᾱ_{t_{i+1}},
    where ε̂ = ε_θ(x_{t_{i+1}}, t_i) stands in for the unknown ε_θ(x_{t_i}, t_i) (the network is read at
    the step's start, as sampling reads it at x_{t_i}); ᾱ = 1 below the first step. The denoiser gives
    ε̂ at ᾱ_{t_i}; give it without ``clip_x0``: clipping would break invertibility.
    ``callback(i, t, x)`` runs after step i with x at timestep t. Deterministic: no noise is drawn.
    """
    if not isinstance(x0, Tensor) or not x0.is_floating_point() or x0.ndim < 1:
        raise ValueError(f"x0 must be a floating tensor (B, …) of images or points, got {type(x0).__name__}")
    chain = respaced_chain(schedule, timesteps(schedule.num_steps, steps, spacing))
    x = x0
    for i, (t, alpha_bar, alpha_bar_lower) in enumerate(reversed(chain)):  # ᾱ_lower → ᾱ_t: noisier
        eps_pred = call_denoiser(denoiser, x, t, alpha_bar, cond).eps  # ε̂ read at ᾱ_{t_i}
        x0_pred = (x - math.sqrt(1.0 - alpha_bar_lower) * eps_pred) / math.sqrt(alpha_bar_lower)
        x = math.sqrt(alpha_bar) * x0_pred + math.sqrt(1.0 - alpha_bar) * eps_pred  # eq. 12, η = 0
        if callback is not None:
            callback(i, t, x)
    return x


def ddim_reconstruct(
    denoiser: Denoiser,
    schedule: NoiseSchedule,
    x0: Tensor,
    *,
    steps: int = 50,
    spacing: str = "uniform",
    cond: dict | None = None,
) -> tuple[Tensor, Tensor]:
    """(x_T, x̂₀): the DDIM inversion of x₀ and the deterministic DDIM sample (η = 0) started from it."""
    latents = ddim_invert(denoiser, schedule, x0, steps=steps, spacing=spacing, cond=cond)
    result = ddim_sample(denoiser, schedule, latents, steps=steps, spacing=spacing, eta=0.0, cond=cond)
    return latents, result.samples


def slerp(a: Tensor, b: Tensor, weight: float) -> Tensor:
    """Spherical linear interpolation (Shoemake 1985), as the DDIM paper interpolates x_T (§5.3).

    sin((1 − w)θ)/sin θ · a + sin(wθ)/sin θ · b, with θ the angle between a and b as flattened vectors.
    Gaussian noises of dimension d have norms ≈ √d whatever w, which a straight line would shrink.
    ``weight`` 0 returns a and 1 returns b exactly; nearly parallel a, b fall back to the straight line.
    """
    if a.shape != b.shape:
        raise ValueError(f"slerp needs a and b of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if not (isinstance(weight, (int, float)) and 0.0 <= weight <= 1.0):
        raise ValueError(f"slerp weight={weight!r} is invalid; it must be a number in [0, 1]")
    if weight == 0:
        return a.clone()
    if weight == 1:
        return b.clone()
    a64, b64 = a.double().flatten(), b.double().flatten()
    norms = float(a64.norm() * b64.norm())
    if norms == 0.0:
        raise ValueError("slerp of a zero vector is undefined; give two non-zero noises")
    cos_theta = min(max(float(a64 @ b64) / norms, -1.0), 1.0)
    theta = math.acos(cos_theta)
    if math.sin(theta) < 1e-6:
        if cos_theta < 0:
            raise ValueError("slerp between opposite vectors is undefined; every great circle joins them")
        return torch.lerp(a, b, weight)
    coef_a = math.sin((1.0 - weight) * theta) / math.sin(theta)
    coef_b = math.sin(weight * theta) / math.sin(theta)
    return coef_a * a + coef_b * b
