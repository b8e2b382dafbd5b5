"""Set-up shared by every sampler: the initial x_T, its generators, the denoiser call."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ddpm.diffusion.prediction import Denoiser, Prediction
from ddpm.diffusion.samplers.noise import PerSampleGenerators, sample_seeds


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


def call_denoiser(
    denoiser: Denoiser, x_t: Tensor, t: float, alpha_bar: float, cond: dict | None
) -> Prediction:
    """The denoiser's (x̂₀, ε̂) for every sample at timestep ``t`` and noise level ᾱ = ``alpha_bar``.

    The network sees t as int64 indices when t is an integer (every timestep sampler, and the σ-samplers
    on integer grids), else as a float tensor: float64 for float64 data, float32 otherwise (half
    precision would round t).
    """
    if float(t).is_integer():
        t_batch = torch.full((x_t.shape[0],), int(t), dtype=torch.long, device=x_t.device)  # (B,)
    else:
        t_dtype = torch.float64 if x_t.dtype == torch.float64 else torch.float32
        t_batch = torch.full((x_t.shape[0],), t, dtype=t_dtype, device=x_t.device)  # (B,)
    prediction = denoiser(x_t, t_batch, alpha_bar, **(cond or {}))
    if not isinstance(prediction, Prediction):  # a bare network passed where its wrapper belongs
        raise TypeError(
            f"the denoiser returned {type(prediction).__name__}, not a Prediction (x̂₀, ε̂); wrap the network "
            "as Parameterized(net, schedule, parameterization) (ddpm.diffusion.prediction)"
        )
    return prediction
