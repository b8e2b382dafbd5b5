"""β schedules and the quantities derived from them, in float64.

Index ``i`` of every array is the paper's timestep ``t = i + 1``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor


def linear_betas(num_steps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> Tensor:
    """DDPM §4: β_t linear from β₁ = 1e-4 to β_T = 0.02 (the paper's T = 1000)."""
    _check_num_steps(num_steps)
    for name, value in (("beta_start", beta_start), ("beta_end", beta_end)):
        if not 0.0 < value < 1.0:
            raise ValueError(f"{name}={value!r} is outside (0, 1); β must lie strictly inside it")
    return torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float64)


def cosine_betas(num_steps: int, s: float = 0.008, max_beta: float = 0.999) -> Tensor:
    """Nichol & Dhariwal 2021, eq. 17: ᾱ(t) = f(t)/f(0), f(t) = cos²((t/T + s)/(1 + s) · π/2).

    β_t = 1 − ᾱ_t/ᾱ_{t−1}, clipped to ``max_beta`` to avoid the singularity at t = T.
    """
    _check_num_steps(num_steps)
    if not 0.0 < max_beta < 1.0:
        raise ValueError(f"max_beta={max_beta!r} is outside (0, 1)")
    t = torch.arange(num_steps + 1, dtype=torch.float64) / num_steps
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    alpha_bar = f / f[0]
    return (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=max_beta)


def sigmoid_betas(
    num_steps: int, start: float = -3.0, end: float = 3.0, tau: float = 1.0, max_beta: float = 0.999
) -> Tensor:
    """Sigmoid ᾱ schedule (Jabri, Fleet, Chen 2022, "Scalable adaptive computation", Alg. 1).

    ᾱ(t) = (σ(−(t(e−s)+s)/τ) − σ(−e/τ)) / (σ(−s/τ) − σ(−e/τ)) for t ∈ [0, 1].
    """
    _check_num_steps(num_steps)
    if not end > start or tau <= 0:
        raise ValueError(f"sigmoid schedule needs end > start and tau > 0, got {start=}, {end=}, {tau=}")
    t = torch.arange(num_steps + 1, dtype=torch.float64) / num_steps
    v_start = torch.sigmoid(torch.tensor(start / tau, dtype=torch.float64))
    v_end = torch.sigmoid(torch.tensor(end / tau, dtype=torch.float64))
    alpha_bar = (-torch.sigmoid((t * (end - start) + start) / tau) + v_end) / (v_end - v_start)
    return (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=max_beta)


SCHEDULES: dict[str, Callable[[int], Tensor]] = {
    "linear": linear_betas,
    "cosine": cosine_betas,
    "sigmoid": sigmoid_betas,
}


def _check_num_steps(num_steps: int) -> None:
    # bool is an int subclass, but T=True is a mistake, not a request for one step.
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps={num_steps!r} is invalid; T must be an integer ≥ 1")


@dataclass(frozen=True, eq=False)  # tensors have no boolean equality
class NoiseSchedule:
    """A fixed forward process q(x_t | x_{t−1}) = N(√(1−β_t) x_{t−1}, β_t I) and what follows.

    All arrays have length T, float64, index i ↔ paper step t = i + 1.
    """

    betas: Tensor
    alphas: Tensor = field(init=False)  # α_t = 1 − β_t
    alpha_bar: Tensor = field(init=False)  # ᾱ_t = ∏_{s≤t} α_s
    alpha_bar_prev: Tensor = field(init=False)  # ᾱ_{t−1}, with ᾱ_0 = 1
    posterior_variance: Tensor = field(init=False)  # β̃_t = (1−ᾱ_{t−1})/(1−ᾱ_t) β_t, eq. 7

    def __post_init__(self) -> None:
        betas = torch.as_tensor(self.betas, dtype=torch.float64).detach().cpu()
        if betas.ndim != 1 or betas.numel() < 1:
            raise ValueError(f"betas must be a non-empty 1-D tensor, got shape {tuple(betas.shape)}")
        bad = (betas <= 0) | (betas >= 1) | ~torch.isfinite(betas)
        if bad.any():
            i = int(bad.nonzero()[0])
            raise ValueError(f"beta[{i}]={betas[i].item()!r} is outside (0, 1); every β must lie inside")
        alphas = 1.0 - betas
        alpha_bar = torch.cumprod(alphas, dim=0)
        alpha_bar_prev = torch.cat([torch.ones(1, dtype=torch.float64), alpha_bar[:-1]])
        object.__setattr__(self, "betas", betas)
        object.__setattr__(self, "alphas", alphas)
        object.__setattr__(self, "alpha_bar", alpha_bar)
        object.__setattr__(self, "alpha_bar_prev", alpha_bar_prev)
        object.__setattr__(self, "posterior_variance", betas * (1.0 - alpha_bar_prev) / (1.0 - alpha_bar))

    @property
    def num_steps(self) -> int:
        """T, the number of forward steps."""
        return self.betas.numel()

    @property
    def snr(self) -> Tensor:
        """Signal-to-noise ratio SNR(t) = ᾱ_t / (1 − ᾱ_t) (Kingma et al. 2021)."""
        return self.alpha_bar / (1.0 - self.alpha_bar)

    def at(self, values: Tensor, t: Tensor, like: Tensor) -> Tensor:
        """``values[t]`` per sample, shaped to broadcast against ``like`` (B, 1, 1, …)."""
        out = values.to(like.device)[t.to(like.device).long()]
        return out.to(like.dtype).reshape(-1, *([1] * (like.ndim - 1)))


def schedule_sigmas(schedule: NoiseSchedule) -> Tensor:
    """σ_t = √((1 − ᾱ_t)/ᾱ_t) for t = 0 … T−1 (Karras et al. 2022, §2: x_t = √ᾱ (x₀ + σ n)), float64,
    ascending."""
    return ((1.0 - schedule.alpha_bar) / schedule.alpha_bar).sqrt()


def t_to_sigmas(t: Tensor, schedule: NoiseSchedule) -> Tensor:
    """σ at (possibly fractional) timesteps ``t``: log σ linear between the T discrete levels
    (k-diffusion ``DiscreteSchedule.t_to_sigma``); float64 on the CPU, ``t``'s shape."""
    log_sigmas = np.log(schedule_sigmas(schedule).numpy())
    levels = np.arange(len(log_sigmas), dtype=np.float64)
    return torch.from_numpy(np.exp(np.interp(t.detach().cpu().double().numpy(), levels, log_sigmas)))


def make_schedule(name: str, num_steps: int = 1000, **kwargs: float) -> NoiseSchedule:
    """Build a :class:`NoiseSchedule` by name: ``linear`` (DDPM), ``cosine`` or ``sigmoid``."""
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; allowed: {', '.join(SCHEDULES)}")
    return NoiseSchedule(SCHEDULES[name](num_steps, **kwargs))
