"""The training objective of DDPM (Algorithm 1, eq. 14) for ε, x₀ and v targets, with min-SNR-γ weighting."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from ddpm.diffusion.process import Parameterization, check_parameterization, q_sample, training_target
from ddpm.diffusion.schedules import NoiseSchedule


def min_snr_weights(schedule: NoiseSchedule, parameterization: Parameterization, gamma: float) -> Tensor:
    """Min-SNR-γ loss weights per timestep (Hang et al. 2023, eq. 9 and §3.4), float64, shape (T,).

    The weight makes every target's loss equal min(SNR, γ)·‖x₀ − x̂₀‖², because
    ‖ε − ε̂‖² = SNR·‖x₀ − x̂₀‖² and ‖v − v̂‖² = (SNR + 1)·‖x₀ − x̂₀‖².
    """
    check_parameterization(parameterization)
    _check_gamma(gamma)
    snr = schedule.snr  # (T,)
    clipped = snr.clamp(max=gamma)
    if parameterization == "eps":
        return clipped / snr
    if parameterization == "x0":
        return clipped
    return clipped / (snr + 1)


def _check_gamma(gamma: float) -> None:
    if (
        isinstance(gamma, bool)
        or not isinstance(gamma, (int, float))
        or not math.isfinite(gamma)
        or gamma <= 0
    ):
        raise ValueError(f"min_snr_gamma={gamma!r} is invalid; it must be a finite number > 0 (or None)")


class DiffusionLoss:
    """Algorithm 1 with the simple loss of eq. 14: t ~ U{0..T−1}, ε ~ N(0, I), ‖target − model(x_t, t)‖².

    Returns the mean over non-batch dimensions, one value per sample (shape (B,)); the caller reduces.
    ``parameterization`` chooses the target (ε as in the paper, x₀, or v of Salimans & Ho 2022);
    ``min_snr_gamma`` turns on min-SNR-γ weighting (Hang et al. 2023), None keeps eq. 14 unweighted.
    """

    def __init__(
        self,
        schedule: NoiseSchedule,
        parameterization: Parameterization = "eps",
        min_snr_gamma: float | None = None,
    ) -> None:
        check_parameterization(parameterization)
        self.schedule = schedule
        self.parameterization = parameterization
        self.min_snr_gamma = min_snr_gamma
        # Per-timestep weights, float64 on the CPU: ones for eq. 14, min-SNR-γ otherwise.
        if min_snr_gamma is None:
            self.weights = torch.ones(schedule.num_steps, dtype=torch.float64)
        else:
            self.weights = min_snr_weights(schedule, parameterization, min_snr_gamma)
        self._weights_by_device: dict[torch.device, Tensor] = {}

    def weights_on(self, device: torch.device | str) -> Tensor:
        """The per-timestep weights as a float32 tensor on ``device``, made once and then cached."""
        device = torch.device(device)
        if device not in self._weights_by_device:
            self._weights_by_device[device] = self.weights.to(device=device, dtype=torch.float32)
        return self._weights_by_device[device]

    def __call__(
        self,
        model: Callable[..., Tensor],
        x0: Tensor,
        *,
        t: Tensor | None = None,
        noise: Tensor | None = None,
        generator: torch.Generator | None = None,
        **cond: object,
    ) -> Tensor:
        """Per-sample loss (B,) for data ``x0`` (B, …); ``t`` (B,) and ``noise`` (like x0) are drawn if None.

        Draws use ``generator`` when given (it must live on x0's device), else the global RNG.
        ``cond`` is passed to the model unchanged, as ``model(x_t, t, **cond)``.
        """
        if x0.ndim < 2:
            raise ValueError(
                f"x0 has shape {tuple(x0.shape)}; it needs a batch dimension and data dims (B, …)"
            )
        if generator is not None and generator.device.type != x0.device.type:
            raise ValueError(f"generator is on {generator.device} but x0 is on {x0.device}; they must match")
        batch = x0.shape[0]
        t = self._timesteps(t, batch, x0.device, generator)  # (B,) int64
        if noise is None:
            noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        elif noise.shape != x0.shape:
            raise ValueError(f"noise has shape {tuple(noise.shape)}; it must match x0's {tuple(x0.shape)}")

        x_t = q_sample(self.schedule, x0, t, noise)  # (B, …), eq. 4
        alpha_bar = self.schedule.at(self.schedule.alpha_bar, t, x0)  # (B, 1, …)
        target = training_target(x0, noise, alpha_bar, self.parameterization)
        prediction = model(x_t, t, **cond)
        if prediction.shape != target.shape:
            # Broadcasting here would silently train on the wrong objective.
            raise ValueError(
                f"model output has shape {tuple(prediction.shape)}; it must match x0's {tuple(target.shape)}"
            )
        error = prediction - target
        if error.dtype in (torch.float16, torch.bfloat16):
            error = error.float()  # squares of half-precision errors lose the small values that matter
        per_sample = error.square().flatten(1).mean(dim=1)  # (B,)
        return per_sample * self.weights_on(x0.device)[t]

    def _timesteps(
        self, t: Tensor | None, batch: int, device: torch.device, generator: torch.Generator | None
    ) -> Tensor:
        """Draw t ~ U{0..T−1} per sample, or check the given t: shape (B,), integers in range."""
        num_steps = self.schedule.num_steps
        if t is None:
            return torch.randint(0, num_steps, (batch,), generator=generator, device=device)
        if t.shape != (batch,):
            raise ValueError(f"t has shape {tuple(t.shape)}; it must be ({batch},), one timestep per sample")
        if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            raise ValueError(f"t has dtype {t.dtype}; it must hold integer timestep indices")
        if batch and (int(t.min()) < 0 or int(t.max()) >= num_steps):
            bad = t[(t < 0) | (t >= num_steps)][0].item()
            raise ValueError(f"t contains {bad}; timesteps must lie in 0..{num_steps - 1}")
        return t.to(device=device, dtype=torch.int64)
