"""The forward process and conversions between ε, x₀ and v (DDPM eq. 4, 6–7, 11; Salimans & Ho 2022).

Functions take ᾱ already broadcast to the data's shape (``schedule.at(schedule.alpha_bar, t, x)``),
so samplers can use them between any two steps, not only t and t − 1.
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor

from ddpm.diffusion.schedules import NoiseSchedule

Parameterization = Literal["eps", "x0", "v"]
PARAMETERIZATIONS: tuple[str, ...] = ("eps", "x0", "v")


def check_parameterization(name: str) -> None:
    if name not in PARAMETERIZATIONS:
        raise ValueError(f"unknown parameterization {name!r}; allowed: {', '.join(PARAMETERIZATIONS)}")


def q_sample(schedule: NoiseSchedule, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
    """Sample q(x_t | x₀) = N(√ᾱ_t x₀, (1 − ᾱ_t) I): x_t = √ᾱ_t x₀ + √(1 − ᾱ_t) ε (eq. 4)."""
    alpha_bar = schedule.at(schedule.alpha_bar, t, x0)
    return alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * noise


def q_posterior(schedule: NoiseSchedule, x0: Tensor, x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """Mean μ̃_t and variance β̃_t of q(x_{t−1} | x_t, x₀) (eq. 6–7)."""
    beta = schedule.at(schedule.betas, t, x_t)
    alpha = schedule.at(schedule.alphas, t, x_t)
    alpha_bar = schedule.at(schedule.alpha_bar, t, x_t)
    alpha_bar_prev = schedule.at(schedule.alpha_bar_prev, t, x_t)
    mean = (alpha_bar_prev.sqrt() * beta / (1 - alpha_bar)) * x0 + (
        alpha.sqrt() * (1 - alpha_bar_prev) / (1 - alpha_bar)
    ) * x_t
    variance = schedule.at(schedule.posterior_variance, t, x_t).expand_as(mean)
    return mean, variance


def x0_from_eps(x_t: Tensor, eps: Tensor, alpha_bar: Tensor) -> Tensor:
    """Invert eq. 4: x₀ = (x_t − √(1 − ᾱ) ε) / √ᾱ."""
    return (x_t - (1 - alpha_bar).sqrt() * eps) / alpha_bar.sqrt()


def eps_from_x0(x_t: Tensor, x0: Tensor, alpha_bar: Tensor) -> Tensor:
    """Invert eq. 4 for ε: ε = (x_t − √ᾱ x₀) / √(1 − ᾱ)."""
    return (x_t - alpha_bar.sqrt() * x0) / (1 - alpha_bar).sqrt()


def v_target(x0: Tensor, eps: Tensor, alpha_bar: Tensor) -> Tensor:
    """Velocity v = √ᾱ ε − √(1 − ᾱ) x₀ (Salimans & Ho 2022, §4)."""
    return alpha_bar.sqrt() * eps - (1 - alpha_bar).sqrt() * x0


def predict_x0_eps(
    x_t: Tensor, model_output: Tensor, alpha_bar: Tensor, parameterization: Parameterization
) -> tuple[Tensor, Tensor]:
    """(x̂₀, ε̂) from a network output under its declared parameterization."""
    if parameterization == "eps":
        return x0_from_eps(x_t, model_output, alpha_bar), model_output
    if parameterization == "x0":
        return model_output, eps_from_x0(x_t, model_output, alpha_bar)
    if parameterization == "v":
        # x₀ = √ᾱ x_t − √(1−ᾱ) v and ε = √(1−ᾱ) x_t + √ᾱ v, since x_t, v are a rotation of x₀, ε.
        a, s = alpha_bar.sqrt(), (1 - alpha_bar).sqrt()
        return a * x_t - s * model_output, s * x_t + a * model_output
    check_parameterization(parameterization)
    raise AssertionError("unreachable")


def training_target(x0: Tensor, eps: Tensor, alpha_bar: Tensor, parameterization: Parameterization) -> Tensor:
    """What a network with this parameterization should output for (x₀, ε)."""
    if parameterization == "eps":
        return eps
    if parameterization == "x0":
        return x0
    if parameterization == "v":
        return v_target(x0, eps, alpha_bar)
    check_parameterization(parameterization)
    raise AssertionError("unreachable")
