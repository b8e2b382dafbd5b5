"""Forward process q(x_t|x₀), posterior q(x_{t−1}|x_t,x₀) and ε/x₀/v conversions, checked independently."""

from __future__ import annotations

import math

import pytest
import torch

from ddpm.diffusion.process import (
    PARAMETERIZATIONS,
    check_parameterization,
    eps_from_x0,
    predict_x0_eps,
    q_posterior,
    q_sample,
    training_target,
    v_target,
    x0_from_eps,
)
from ddpm.diffusion.schedules import make_schedule

F64 = torch.float64


@pytest.fixture(scope="module", params=["linear", "cosine"])
def schedule(request):
    return make_schedule(request.param, 1000)


def test_q_sample_matches_eq4_per_sample() -> None:
    schedule = make_schedule("linear", 1000)
    generator = torch.Generator().manual_seed(0)
    x0 = torch.randn(3, 2, 4, 4, generator=generator, dtype=F64)
    noise = torch.randn(3, 2, 4, 4, generator=generator, dtype=F64)
    t = torch.tensor([0, 999, 417])
    x_t = q_sample(schedule, x0, t, noise)
    assert x_t.shape == x0.shape and x_t.dtype == F64
    for i, step in enumerate(t.tolist()):
        alpha_bar = schedule.alpha_bar[step].item()
        expected = math.sqrt(alpha_bar) * x0[i] + math.sqrt(1 - alpha_bar) * noise[i]
        torch.testing.assert_close(x_t[i], expected, rtol=0, atol=1e-14)


@pytest.mark.parametrize("step", [0, 250, 999])
def test_q_sample_moments(schedule, step: int) -> None:
    num_draws = 100_000
    generator = torch.Generator().manual_seed(step)
    x0 = torch.tensor([-1.0, 0.25, 2.0], dtype=F64).expand(num_draws, 3)
    noise = torch.randn(num_draws, 3, generator=generator, dtype=F64)
    x_t = q_sample(schedule, x0, torch.full((num_draws,), step), noise)
    alpha_bar = schedule.alpha_bar[step].item()
    mean, var = math.sqrt(alpha_bar) * x0[0], 1 - alpha_bar
    # 5 standard errors: the mean's is √(var/N), the variance's is var·√(2/N).
    torch.testing.assert_close(x_t.mean(0), mean, rtol=0, atol=5 * math.sqrt(var / num_draws))
    torch.testing.assert_close(
        x_t.var(0), torch.full((3,), var, dtype=F64), rtol=0, atol=5 * var * math.sqrt(2 / num_draws)
    )


def _bayes_posterior(x0: float, x_t: float, alpha_bar_prev: float, alpha: float) -> tuple[float, float]:
    """Product rule on scalars: N(x; √ᾱ_{t−1} x₀, 1−ᾱ_{t−1}) · N(x_t; √α_t x, β_t), normalised in x."""
    beta = 1 - alpha
    prior_precision = 1 / (1 - alpha_bar_prev)
    # As a function of x, N(x_t; √α x, β) ∝ N(x; x_t/√α, β/α).
    likelihood_precision = alpha / beta
    precision = prior_precision + likelihood_precision
    mean = (
        prior_precision * math.sqrt(alpha_bar_prev) * x0 + likelihood_precision * x_t / math.sqrt(alpha)
    ) / (precision)
    return mean, 1 / precision


def test_q_posterior_equals_gaussian_product_rule(schedule) -> None:
    steps = [1, 2, 10, 500, 998, 999]
    x0 = torch.tensor([0.7, -1.3, 0.0, 1.0, -0.2, 0.4], dtype=F64).reshape(6, 1)
    x_t = torch.tensor([-0.5, 0.9, 1.1, -2.0, 0.3, 0.05], dtype=F64).reshape(6, 1)
    mean, variance = q_posterior(schedule, x0, x_t, torch.tensor(steps))
    assert mean.shape == variance.shape == (6, 1)
    alpha_bar = 1.0
    for i, beta in enumerate(schedule.betas.tolist()):
        alpha_bar_prev, alpha_bar = alpha_bar, alpha_bar * (1 - beta)
        if i in steps:
            row = steps.index(i)
            expected_mean, expected_var = _bayes_posterior(
                x0[row].item(), x_t[row].item(), alpha_bar_prev, 1 - beta
            )
            assert mean[row].item() == pytest.approx(expected_mean, rel=1e-10, abs=1e-12)
            assert variance[row].item() == pytest.approx(expected_var, rel=1e-10, abs=0)


def test_q_posterior_first_step_is_point_mass_at_x0(schedule) -> None:
    # Index 0 is the paper's t = 1: ᾱ_0 = 1 makes q(x_0 | x_1, x_0) the point x_0.
    x0 = torch.tensor([[0.3, -0.8]], dtype=F64)
    x_t = torch.tensor([[1.5, 2.0]], dtype=F64)
    mean, variance = q_posterior(schedule, x0, x_t, torch.tensor([0]))
    torch.testing.assert_close(mean, x0, rtol=0, atol=1e-12)
    assert (variance == 0).all()


def test_q_posterior_mean_is_unbiased_over_the_forward_process() -> None:
    # E_{x_t ~ q(x_t|x₀)}[μ̃(x_t, x₀)] = E[x_{t−1} | x₀] = √ᾱ_{t−1} x₀: the chain rule of expectations.
    schedule = make_schedule("linear", 100)
    step, num_draws = 40, 200_000
    generator = torch.Generator().manual_seed(1)
    x0 = torch.full((num_draws, 1), 1.5, dtype=F64)
    t = torch.full((num_draws,), step)
    x_t = q_sample(schedule, x0, t, torch.randn(num_draws, 1, generator=generator, dtype=F64))
    mean, variance = q_posterior(schedule, x0, x_t, t)
    samples = mean + variance.sqrt() * torch.randn(num_draws, 1, generator=generator, dtype=F64)
    alpha_bar_prev = schedule.alpha_bar_prev[step].item()
    tolerance = 5 * math.sqrt((1 - alpha_bar_prev) / num_draws)
    assert samples.mean().item() == pytest.approx(math.sqrt(alpha_bar_prev) * 1.5, abs=tolerance)
    # and the marginal variance of x_{t−1} given x₀ is 1 − ᾱ_{t−1}.
    assert samples.var().item() == pytest.approx(1 - alpha_bar_prev, rel=5 * math.sqrt(2 / num_draws))


@pytest.mark.parametrize("parameterization", PARAMETERIZATIONS)
def test_round_trip_through_each_parameterization(schedule, parameterization: str) -> None:
    generator = torch.Generator().manual_seed(2)
    t = torch.tensor([0, 1, 100, 500, 900, 998, 999])
    x0 = torch.randn(len(t), 3, 4, 4, generator=generator, dtype=F64)
    eps = torch.randn(len(t), 3, 4, 4, generator=generator, dtype=F64)
    alpha_bar = schedule.at(schedule.alpha_bar, t, x0)
    x_t = q_sample(schedule, x0, t, eps)
    target = training_target(x0, eps, alpha_bar, parameterization)
    x0_hat, eps_hat = predict_x0_eps(x_t, target, alpha_bar, parameterization)
    torch.testing.assert_close(x0_hat, x0, rtol=0, atol=1e-6)
    torch.testing.assert_close(eps_hat, eps, rtol=0, atol=1e-6)


def test_training_targets_are_eps_x0_and_velocity() -> None:
    generator = torch.Generator().manual_seed(3)
    x0, eps = (
        torch.randn(2, 5, generator=generator, dtype=F64),
        torch.randn(2, 5, generator=generator, dtype=F64),
    )
    alpha_bar = torch.tensor([[0.9], [0.2]], dtype=F64)
    assert training_target(x0, eps, alpha_bar, "eps") is eps
    assert training_target(x0, eps, alpha_bar, "x0") is x0
    # v = dx_t/dφ for x_t = cos φ x₀ + sin φ ε (Salimans & Ho 2022), with cos φ = √ᾱ.
    phi = torch.arccos(alpha_bar.sqrt())
    expected_v = -torch.sin(phi) * x0 + torch.cos(phi) * eps
    torch.testing.assert_close(training_target(x0, eps, alpha_bar, "v"), expected_v, rtol=0, atol=1e-14)


def test_x_t_and_v_are_a_rotation_of_x0_and_eps() -> None:
    generator = torch.Generator().manual_seed(4)
    x0, eps = (
        torch.randn(4, 8, generator=generator, dtype=F64),
        torch.randn(4, 8, generator=generator, dtype=F64),
    )
    alpha_bar = torch.tensor([[0.999], [0.5], [0.1], [1e-6]], dtype=F64)
    x_t = alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * eps
    v = v_target(x0, eps, alpha_bar)
    torch.testing.assert_close(x_t.square() + v.square(), x0.square() + eps.square(), rtol=1e-12, atol=1e-12)


def test_eps_and_x0_conversions_invert_each_other() -> None:
    generator = torch.Generator().manual_seed(5)
    x_t, eps = (
        torch.randn(3, 6, generator=generator, dtype=F64),
        torch.randn(3, 6, generator=generator, dtype=F64),
    )
    alpha_bar = torch.tensor([[0.99], [0.4], [0.01]], dtype=F64)
    x0 = x0_from_eps(x_t, eps, alpha_bar)
    torch.testing.assert_close(eps_from_x0(x_t, x0, alpha_bar), eps, rtol=0, atol=1e-12)
    torch.testing.assert_close(alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * eps, x_t, rtol=0, atol=1e-12)


def test_unknown_parameterization_rejected() -> None:
    x = torch.zeros(2, 3)
    alpha_bar = torch.full((2, 1), 0.5)
    message = r"unknown parameterization 'score'; allowed: eps, x0, v"
    with pytest.raises(ValueError, match=message):
        check_parameterization("score")
    with pytest.raises(ValueError, match=message):
        predict_x0_eps(x, x, alpha_bar, "score")
    with pytest.raises(ValueError, match=message):
        training_target(x, x, alpha_bar, "score")
