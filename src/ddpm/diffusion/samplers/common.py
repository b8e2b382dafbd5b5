"""Checks and set-up shared by every sampler: the initial x_T, its generators, the model call."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from ddpm.diffusion.process import eps_from_x0, predict_x0_eps
from ddpm.diffusion.samplers.noise import PerSampleGenerators, sample_seeds

Denoiser = Callable[..., Tensor]  # model(x_t, t, **cond) -> Tensor of x_t's shape


def initial_state(
    shape_or_noise: tuple[int, ...] | Tensor,
    seeds: Sequence[int] | None,
    device: torch.device | str | None,
    dtype: torch.dtype,
) -> tuple[Tensor, PerSampleGenerators]:
    """x_T (B, …) and the per-sample generators that continue to draw each step's noise z.

    From a shape, x_T is the first draw of each generator. From a tensor, each generator still skips
    that first draw, so ``per_sample_noise(seeds, shape)`` as x_T reproduces the shape call exactly.
    Without ``seeds`` the generators are seeded with ``sample_seeds(0, B)``.
    """
    if isinstance(shape_or_noise, Tensor):
        if not shape_or_noise.is_floating_point() or shape_or_noise.ndim < 1:
            raise ValueError(
                f"x_T must be a floating tensor (B, …), got {shape_or_noise.dtype} of shape "
                f"{tuple(shape_or_noise.shape)}"
            )
        x_T = shape_or_noise.to(device) if device is not None else shape_or_noise
        shape = tuple(x_T.shape)
    else:
        shape = tuple(shape_or_noise)
        if not shape or any(not isinstance(n, int) or n < 1 for n in shape):
            raise ValueError(f"shape {shape!r} is invalid; give (B, …) with every dimension an integer ≥ 1")
    seeds = sample_seeds(0, shape[0]) if seeds is None else list(seeds)
    if len(seeds) != shape[0]:
        raise ValueError(f"got {len(seeds)} seeds for a batch of {shape[0]}; give one seed per sample")
    generators = PerSampleGenerators(seeds)
    if isinstance(shape_or_noise, Tensor):
        generators.randn(shape[1:], "cpu", torch.float32)  # skip the draw that x_T replaces
        return x_T, generators
    return generators.randn(shape[1:], device if device is not None else "cpu", dtype), generators


def call_model(model: Denoiser, x_t: Tensor, t: int, cond: dict | None) -> Tensor:
    """The denoiser's output at timestep index ``t`` for every sample of the batch."""
    t_batch = torch.full((x_t.shape[0],), t, dtype=torch.long, device=x_t.device)  # (B,)
    output = model(x_t, t_batch, **(cond or {}))
    if output.shape != x_t.shape:
        raise ValueError(
            f"model output has shape {tuple(output.shape)} but x_t has {tuple(x_t.shape)}; "
            "the samplers need a prediction of x_t's shape (no learned variance channels)"
        )
    return output


def check_clip(clip_x0: float | None) -> None:
    if clip_x0 is not None and not clip_x0 > 0:
        raise ValueError(f"clip_x0={clip_x0!r} is invalid; use None (no clipping) or a positive bound")


def predict_x0_eps_clipped(
    x_t: Tensor, model_output: Tensor, alpha_bar: float, parameterization: str, clip_x0: float | None
) -> tuple[Tensor, Tensor]:
    """(x̂₀, ε̂) from the model output; with ``clip_x0=c``, x̂₀ is clamped to [−c, c] and ε̂ recomputed
    from it (as guided-diffusion does), so the pair still satisfies x_t = √ᾱ x̂₀ + √(1−ᾱ) ε̂ (eq. 4).
    """
    # A 0-d float64 coefficient keeps the arithmetic in x_t's dtype (0-d tensors do not promote).
    alpha_bar_t = torch.tensor(alpha_bar, dtype=torch.float64)
    x0_pred, eps_pred = predict_x0_eps(x_t, model_output, alpha_bar_t, parameterization)
    if clip_x0 is not None:
        x0_pred = x0_pred.clamp(-clip_x0, clip_x0)
        eps_pred = eps_from_x0(x_t, x0_pred, alpha_bar_t)
    return x0_pred, eps_pred
