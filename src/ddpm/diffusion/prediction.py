"""The denoiser the samplers call: a raw network wrapped by its parameterization (ε, x₀ or v).

A network predicts ε, x₀ or v (Salimans & Ho 2022); a sampler needs the denoised estimate x̂₀ and the
noise ε̂ it implies, a pair that satisfies eq. 4 of DDPM, x_t = √ᾱ x̂₀ + √(1 − ᾱ) ε̂. :class:`Parameterized`
makes that pair from any network, as EDM's ``EDMPrecond`` and k-diffusion's ``DiscreteEpsDDPMDenoiser``
wrap a backbone, so that samplers never see the parameterization, epsilon scaling or x̂₀ clipping.

The order of the wrappers is fixed by what each acts on: classifier-free guidance (``guidance``) and
epsilon scaling (``eps_scaling``) act on the raw output, which is then converted to (x̂₀, ε̂) at the
sampler's ᾱ and last clipped — clipping is the final say on x̂₀, after any rescaled ε̂ has moved it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

from ddpm.diffusion.eps_scaling import check_eps_scale, scale_eps
from ddpm.diffusion.process import Parameterization, check_parameterization, eps_from_x0, predict_x0_eps
from ddpm.diffusion.schedules import NoiseSchedule, t_to_sigmas
from ddpm.diffusion.variances import split_variance_channels, variance_frac_from_output

Network = Callable[..., Tensor]  # net(x_t, t, **cond) -> output of x_t's shape (ε, x₀ or v), or (B, 2C, …)


@dataclass(frozen=True, eq=False)  # tensors have no boolean equality
class Prediction:
    """The denoised estimate x̂₀ (B, …) and the implied noise ε̂ (B, …), x_t = √ᾱ x̂₀ + √(1 − ᾱ) ε̂ (eq. 4),
    and for a learned-variance network the weight v of its variance (Nichol & Dhariwal eq. 15).

    Unpacks as the pair ``x0, eps = prediction``; ``variance_frac`` is None for fixed variances, else
    v (B, …) of log Σ_θ = v log β + (1 − v) log β̃ on whatever chain the caller steps along
    (``variances.learned_range_log_variance``): samplers that use a learned variance read it, the
    others ignore it.
    """

    x0: Tensor
    eps: Tensor
    variance_frac: Tensor | None = None

    def __iter__(self) -> Iterator[Tensor]:
        return iter((self.x0, self.eps))


class Denoiser(Protocol):
    """What every sampler calls: ``denoiser(x_t, t, alpha_bar, **cond) -> Prediction``.

    ``t`` (B,) is the network's timestep, int64 or fractional; ``alpha_bar`` the ᾱ of the noise level
    the sampler integrates at, shared by the batch (None: ᾱ(t) from the schedule).
    """

    def __call__(self, x_t: Tensor, t: Tensor, alpha_bar: float | None = None, **cond: Any) -> Prediction: ...


def check_clip(clip_x0: float | None) -> None:
    """Refuse a bound c ≤ 0 for x̂₀ ∈ [−c, c]; None is no clipping."""
    if clip_x0 is not None and not clip_x0 > 0:
        raise ValueError(f"clip_x0={clip_x0!r} is invalid; use None (no clipping) or a positive bound")


def to_prediction(
    x_t: Tensor, output: Tensor, alpha_bar: Tensor, parameterization: Parameterization, clip_x0: float | None
) -> Prediction:
    """(x̂₀, ε̂) from a network output under its parameterization at ᾱ (eq. 4); with ``clip_x0=c``, x̂₀
    is clamped to [−c, c] and ε̂ recomputed from it (as guided-diffusion does, and diffusers'
    ``use_clipped_model_output=True``), so the pair still satisfies eq. 4."""
    x0, eps = predict_x0_eps(x_t, output, alpha_bar, parameterization)
    if clip_x0 is not None:
        x0 = x0.clamp(-clip_x0, clip_x0)
        eps = eps_from_x0(x_t, x0, alpha_bar)
    return Prediction(x0, eps)


def alpha_bar_at(schedule: NoiseSchedule, t: Tensor, like: Tensor) -> Tensor:
    """ᾱ per sample (B, 1, …) in ``like``'s dtype: ``schedule.alpha_bar[t]`` at integer timesteps, and at
    the fractional ones of the σ-samplers 1/(1 + σ(t)²) through their own map (``t_to_sigmas``)."""
    if not t.is_floating_point():
        return schedule.at(schedule.alpha_bar, t, like)
    alpha_bar = 1 / (1 + t_to_sigmas(t, schedule) ** 2)  # (B,) float64
    return alpha_bar.to(device=like.device, dtype=like.dtype).reshape(-1, *([1] * (like.ndim - 1)))


class Parameterized:
    """``Parameterized(net, schedule, parameterization, eps_scale=λ, clip_x0=c)(x_t, t, ᾱ, **cond)``:
    the :class:`Prediction` (x̂₀, ε̂) of ``net(x_t, t, **cond)``, a :class:`Denoiser` for every sampler.

    ``eps_scale`` λ ≠ 1 divides the predicted noise, ε̂ / λ (epsilon scaling, ``eps_scaling``), before
    the conversion; ``clip_x0`` clamps x̂₀ last. ``net`` may be a guidance wrapper around the network.
    ``learned_variance=True``: the network outputs (B, 2C, …), its prediction then the raw variance
    channels r, returned as ``variance_frac`` v = (r + 1)/2 (Nichol & Dhariwal eq. 15, improved-diffusion's
    ``LEARNED_RANGE``); λ and clipping act on the prediction only.
    """

    def __init__(
        self,
        net: Network,
        schedule: NoiseSchedule,
        parameterization: Parameterization = "eps",
        *,
        eps_scale: float = 1.0,
        clip_x0: float | None = None,
        learned_variance: bool = False,
    ) -> None:
        check_parameterization(parameterization)
        check_eps_scale(eps_scale)
        check_clip(clip_x0)
        if not isinstance(learned_variance, bool):
            raise ValueError(f"learned_variance={learned_variance!r} is invalid; give True or False")
        self.net = net
        self.schedule = schedule
        self.parameterization = parameterization
        self.eps_scale = float(eps_scale)
        self.clip_x0 = clip_x0
        self.learned_variance = learned_variance

    def __call__(self, x_t: Tensor, t: Tensor, alpha_bar: float | None = None, **cond: Any) -> Prediction:
        """(x̂₀, ε̂) at ᾱ = ``alpha_bar`` (the sampler's level), or at ᾱ(t) of the schedule when None."""
        output = self.net(x_t, t, **cond)
        variance_frac = None
        if self.learned_variance:
            output, raw = split_variance_channels(output, x_t)  # (B, C, …) each
            variance_frac = variance_frac_from_output(raw)
        elif output.shape != x_t.shape:
            raise ValueError(
                f"model output has shape {tuple(output.shape)} but x_t has {tuple(x_t.shape)}; "
                "the samplers need a prediction of x_t's shape (no learned variance channels)"
            )
        if self.eps_scale != 1.0:
            # Scaling reads the output at ᾱ(t) in x_t's dtype, the level the network was told; for x₀/v
            # it differs from the sampler's ᾱ by rounding only, and keeps samples bit-identical to before.
            at_t = alpha_bar_at(self.schedule, t, x_t)
            output = scale_eps(x_t, output, at_t, self.eps_scale, self.parameterization)
        if alpha_bar is None:
            level = alpha_bar_at(self.schedule, t, x_t)  # (B, 1, …)
        else:
            # A 0-d float64 ᾱ keeps the arithmetic in x_t's dtype (0-d tensors do not promote).
            level = torch.tensor(alpha_bar, dtype=torch.float64)
        x0, eps = to_prediction(x_t, output, level, self.parameterization, self.clip_x0)
        return Prediction(x0, eps, variance_frac)
