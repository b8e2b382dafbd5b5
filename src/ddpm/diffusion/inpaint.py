"""RePaint inpainting (Lugmayr et al. 2022) with any unconditional denoiser: no inpainting training.

Each reverse step draws the known pixels from the forward process q(x_{t−1} | x₀) of the input image
(eq. 8a) and the unknown ones from the model's reverse step (eq. 8b), then joins them (eq. 8c).
Resampling (§4.2, Algorithm 1) goes back up the chain by noising with q(x_t | x_{t−1}), so the model
can make the generated region agree with the pasted one; jumps of j steps, repeated r − 1 times,
spread that harmonisation over the chain at a fraction of the cost of resampling every step.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from ddpm.diffusion.prediction import Denoiser
from ddpm.diffusion.samplers.ancestral import ancestral_step, check_variance
from ddpm.diffusion.samplers.common import call_denoiser, initial_state
from ddpm.diffusion.samplers.result import SampleResult
from ddpm.diffusion.samplers.spacing import respaced_chain, timesteps
from ddpm.diffusion.schedules import NoiseSchedule


def repaint_timeline(steps: int, jump_length: int, resamples: int) -> list[int]:
    """The chain positions RePaint visits: 0 is x_T (the chain's first timestep), ``steps`` the image.

    Each move is ±1: +1 a reverse step, −1 a forward step. After reaching each position
    ``steps − 1 − k·j`` (k = 0, 1, … while k·j < steps − j), the walk goes back up j positions, r − 1
    times in all: the RePaint repository's ``get_schedule_jump`` (and diffusers' ``RePaintScheduler``),
    there written as timesteps t = steps − 1 − position. r = 1 is plain sampling with pasting.
    """
    for name, value in (("steps", steps), ("jump_length", jump_length), ("resamples", resamples)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r} is invalid; it must be an integer ≥ 1")
    jumps_left = {t: resamples - 1 for t in range(0, steps - jump_length, jump_length)}
    t = steps - 1  # the repository's timestep: steps − 1 at x_T, −1 at the image
    visited = [t]
    while t >= 0:
        t -= 1
        visited.append(t)
        if jumps_left.get(t, 0) > 0:
            jumps_left[t] -= 1
            for _ in range(jump_length):
                t += 1
                visited.append(t)
    return [steps - 1 - t for t in visited]


def check_mask(mask: Tensor, image: Tensor) -> Tensor:
    """``mask`` as a bool tensor of ``image``'s shape: True (1) where pixels are to be generated."""
    if not isinstance(mask, Tensor):
        raise ValueError(f"mask must be a tensor, got {type(mask).__name__}")
    try:
        shape = torch.broadcast_shapes(mask.shape, image.shape)
    except RuntimeError:
        shape = None
    if shape != image.shape:
        raise ValueError(
            f"mask shape {tuple(mask.shape)} does not match image shape {tuple(image.shape)}; "
            "give the image's shape or one that broadcasts to it"
        )
    if mask.dtype != torch.bool:
        if not ((mask == 0) | (mask == 1)).all():
            raise ValueError("mask values must be 0 (keep) or 1 (generate); threshold a soft mask first")
        mask = mask == 1
    return mask.to(image.device).expand(image.shape)


def repaint(
    denoiser: Denoiser,
    schedule: NoiseSchedule,
    image: Tensor,
    mask: Tensor,
    *,
    steps: int = 250,
    jump_length: int = 10,
    resamples: int = 10,
    spacing: str = "uniform",
    variance: str = "beta_tilde",
    seeds: Sequence[int] | None = None,
    cond: dict | None = None,
    callback: Callable[[int, int, Tensor], None] | None = None,
) -> SampleResult:
    """Fill the pixels where ``mask`` is True (1) in ``image`` (B, …) (RePaint, Algorithm 1).

    The reverse step (eq. 8b) is :func:`ancestral_step` on the respaced chain over
    ``timesteps(T, steps, spacing)`` with σ² = ``variance``, or the denoiser's learned variance where it
    has one (RePaint's own models learn it); the known part (eq. 8a) is
    √ᾱ_prev x₀ + √(1 − ᾱ_prev) ε; a forward step from ᾱ_t to ᾱ_up is
    √(ᾱ_up/ᾱ_t) x + √(1 − ᾱ_up/ᾱ_t) ε (Algorithm 1 line 10 on the respaced chain). The paper's
    defaults are steps = 250, j = 10, r = 10 (≈ 4,500 network calls). Finally the known pixels are
    pasted from ``image``, so they equal it exactly. All noise comes from per-sample generators
    (``seeds``, default ``sample_seeds(0, B)``), so image i ignores the batch size.
    ``callback(i, t, x)`` runs after each model call i at timestep t.
    """
    check_variance(variance)
    if not isinstance(image, Tensor) or not image.is_floating_point() or image.ndim < 2:
        raise ValueError(f"image must be a floating tensor (B, …), got {type(image).__name__}")
    generate = check_mask(mask, image)  # (B, …) bool
    chain = respaced_chain(schedule, timesteps(schedule.num_steps, steps, spacing))
    alpha_bars = [step.alpha_bar for step in chain] + [1.0]  # ᾱ at positions 0 … steps
    x, generators = initial_state(tuple(image.shape), seeds, image.device, image.dtype)  # x_T: (B, …)
    timeline = repaint_timeline(steps, jump_length, resamples)
    nfe = 0
    for position, next_position in itertools.pairwise(timeline):
        if next_position < position:  # forward: noise back up one position, q(x_up | x)
            ratio = alpha_bars[next_position] / alpha_bars[position]  # ᾱ_up / ᾱ_t = 1 − β'
            x = math.sqrt(ratio) * x + math.sqrt(1.0 - ratio) * generators.randn(
                x.shape[1:], x.device, x.dtype
            )
            continue
        t, alpha_bar, alpha_bar_prev = chain[position]
        prediction = call_denoiser(denoiser, x, t, alpha_bar, cond)  # x̂₀ (B, …) and any learned variance
        last = next_position == steps  # Algorithm 1: z = ε = 0 at the last step
        z = None if last else generators.randn(x.shape[1:], x.device, x.dtype)
        unknown = ancestral_step(x, prediction.x0, alpha_bar, alpha_bar_prev, variance=variance, noise=z,
                                 variance_frac=prediction.variance_frac)  # eq. 8b  # fmt: skip
        if last:
            known = image
        else:
            eps = generators.randn(x.shape[1:], x.device, x.dtype)
            known = math.sqrt(alpha_bar_prev) * image + math.sqrt(1.0 - alpha_bar_prev) * eps  # eq. 8a
        x = torch.where(generate, unknown, known)  # eq. 8c
        if callback is not None:
            callback(nfe, t, x)
        nfe += 1
    return SampleResult(samples=torch.where(generate, x, image), nfe=nfe)
