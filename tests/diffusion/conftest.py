"""Fixtures for the diffusion tests: denoisers whose exact answer is known in closed form."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch
from torch import Tensor

from ddpm.diffusion.schedules import NoiseSchedule


def _as_parameterization(x_t: Tensor, x0: Tensor, alpha_bar: Tensor, parameterization: str) -> Tensor:
    """The network output that corresponds to the exact x̂₀ (all float64)."""
    eps = (x_t - alpha_bar.sqrt() * x0) / (1 - alpha_bar).sqrt()
    outputs = {"eps": eps, "x0": x0, "v": alpha_bar.sqrt() * eps - (1 - alpha_bar).sqrt() * x0}
    return outputs[parameterization]


class GaussianDenoiser:
    """Exact denoiser for data x₀ ~ N(mean, std² I), the same in every coordinate.

    With x_t = √ᾱ x₀ + √(1−ᾱ) ε, (x₀, x_t) are jointly Gaussian, so
    E[x₀ | x_t] = mean + √ᾱ std² / (ᾱ std² + 1 − ᾱ) · (x_t − √ᾱ mean), linear in x_t.
    Computed in float64, returned in x_t's dtype as ε, x₀ or v.
    """

    def __init__(self, schedule: NoiseSchedule, mean: float, std: float, parameterization: str = "eps"):
        self.alpha_bar = schedule.alpha_bar
        self.mean, self.std, self.parameterization = mean, std, parameterization

    def __call__(self, x_t: Tensor, t: Tensor) -> Tensor:
        alpha_bar = self.alpha_bar[t.cpu()].to(x_t.device).reshape(-1, *[1] * (x_t.ndim - 1))  # (B, 1, …)
        x = x_t.double()
        gain = alpha_bar.sqrt() * self.std**2 / (alpha_bar * self.std**2 + 1 - alpha_bar)
        x0 = self.mean + gain * (x - alpha_bar.sqrt() * self.mean)
        return _as_parameterization(x, x0, alpha_bar, self.parameterization).to(x_t.dtype)


class PointMixtureDenoiser:
    """Exact denoiser for data drawn from points c_k (each of the sample shape) with weights w_k.

    p(k | x_t) ∝ w_k exp(−‖x_t − √ᾱ c_k‖² / (2(1−ᾱ))), and E[x₀ | x_t] = Σ_k p(k | x_t) c_k.
    """

    def __init__(self, schedule: NoiseSchedule, points: Tensor, weights: Sequence[float]):
        self.alpha_bar = schedule.alpha_bar
        self.points = points.double()  # (K, …)
        self.log_weights = torch.tensor(weights, dtype=torch.float64).log()  # (K,)

    def __call__(self, x_t: Tensor, t: Tensor) -> Tensor:
        alpha_bar = self.alpha_bar[t.cpu()].to(x_t.device).reshape(-1, *[1] * (x_t.ndim - 1))  # (B, 1, …)
        x = x_t.double()
        diff = x[:, None] - alpha_bar.sqrt()[:, None] * self.points[None]  # (B, K, …)
        sq_dist = diff.flatten(2).pow(2).sum(-1)  # (B, K)
        logits = self.log_weights - sq_dist / (2 * (1 - alpha_bar.flatten()[:, None]))
        posterior = logits.softmax(dim=1)  # (B, K)
        x0 = torch.einsum("bk,k...->b...", posterior, self.points)
        return _as_parameterization(x, x0, alpha_bar, "eps").to(x_t.dtype)


@pytest.fixture
def gaussian_denoiser() -> type[GaussianDenoiser]:
    """``gaussian_denoiser(schedule, mean, std, parameterization)``: exact denoiser of N(mean, std² I)."""
    return GaussianDenoiser


@pytest.fixture
def point_mixture_denoiser() -> type[PointMixtureDenoiser]:
    """``point_mixture_denoiser(schedule, points, weights)``: exact ε-denoiser of a point mixture."""
    return PointMixtureDenoiser


def toy_model(x_t: Tensor, t: Tensor) -> Tensor:
    """A fixed, deterministic, non-trivial 'network' for parity runs."""
    return 0.1 * x_t + 0.01 * t.to(x_t.dtype).reshape(-1, *[1] * (x_t.ndim - 1)) / 1000


@pytest.fixture
def toy_denoiser():
    """``0.1 x_t + 0.01 t / 1000``, elementwise, so a batch's rows never interact."""
    return toy_model
