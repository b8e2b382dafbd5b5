"""Known answers: samplers driven by the exact denoiser of a known data distribution.

For Gaussian data N(μ, s² I) the exact x̂₀ is linear in x_t, so every sampler step is affine,
x' = A x + b + σ z, and the law of the output is N(m, v) with (m, v) from a scalar recursion written
here from the papers' formulas. Monte Carlo samples must match that law within 5 standard errors, and
the law itself must approach the data as the number of steps grows. Batches stay under 32768
elements, so torch runs each op on one thread (no thread sync on shared cores).
"""

import math

import pytest
import torch

from ddpm.diffusion.prediction import Parameterized
from ddpm.diffusion.samplers import ancestral_sample, ddim_sample, respaced_chain, sample_seeds, timesteps
from ddpm.diffusion.schedules import make_schedule

MEAN, STD = 0.5, 0.3


def exact_law(
    schedule, steps: int, sampler: str, variance: str = "beta", eta: float = 0.0
) -> tuple[float, float]:
    """Mean and standard deviation of the sampler's output for data N(MEAN, STD²), from x_T ~ N(0, 1)."""
    m, v = 0.0, 1.0
    for _, alpha_bar, alpha_bar_prev in respaced_chain(schedule, timesteps(schedule.num_steps, steps)):
        a = math.sqrt(alpha_bar)
        gain = a * STD**2 / (alpha_bar * STD**2 + 1 - alpha_bar)  # x̂₀ = gain·x + (1 − gain·a)·μ
        x0_slope, x0_shift = gain, (1 - gain * a) * MEAN
        last = alpha_bar_prev == 1.0
        if sampler == "ddim":  # DDIM eq. 12 with σ from eq. 16
            sigma = eta * math.sqrt((1 - alpha_bar_prev) / (1 - alpha_bar) * (1 - alpha_bar / alpha_bar_prev))
            eps_slope, eps_shift = (
                (1 - a * x0_slope) / math.sqrt(1 - alpha_bar),
                -a * x0_shift / math.sqrt(1 - alpha_bar),
            )
            direction = math.sqrt(1 - alpha_bar_prev - sigma**2)
            slope = math.sqrt(alpha_bar_prev) * x0_slope + direction * eps_slope
            shift = math.sqrt(alpha_bar_prev) * x0_shift + direction * eps_shift
        else:  # DDPM Algorithm 2 with the posterior mean of eq. 7 on the respaced chain
            beta = 1 - alpha_bar / alpha_bar_prev
            c_x0 = math.sqrt(alpha_bar_prev) * beta / (1 - alpha_bar)
            c_xt = math.sqrt(1 - beta) * (1 - alpha_bar_prev) / (1 - alpha_bar)
            slope, shift = c_x0 * x0_slope + c_xt, c_x0 * x0_shift
            sigma = math.sqrt(beta if variance == "beta" else beta * (1 - alpha_bar_prev) / (1 - alpha_bar))
        sigma = 0.0 if last else sigma
        m, v = slope * m + shift, slope**2 * v + sigma**2
    return m, math.sqrt(v)


def assert_matches_law(samples: torch.Tensor, law: tuple[float, float]) -> None:
    """Samples (B, d) with iid coordinates against N(m, s²): 5 standard errors on mean and std."""
    values = samples.double().flatten()
    n, (m, s) = values.numel(), law
    assert abs(values.mean().item() - m) < 5 * s / math.sqrt(n)
    assert abs(values.std().item() - s) < 5 * s / math.sqrt(2 * n)


@pytest.mark.parametrize("schedule_name", ["linear", "cosine"])
@pytest.mark.parametrize("parameterization", ["eps", "x0", "v"])
def test_ddim_reproduces_exact_law(schedule_name, parameterization, gaussian_denoiser):
    schedule = make_schedule(schedule_name)
    denoiser = Parameterized(
        gaussian_denoiser(schedule, MEAN, STD, parameterization), schedule, parameterization
    )
    result = ddim_sample(denoiser, schedule, (2000, 16), steps=50)
    assert_matches_law(result.samples, exact_law(schedule, 50, "ddim"))


@pytest.mark.parametrize("variance", ["beta", "beta_tilde"])
def test_full_ancestral_chain_reproduces_exact_law(variance, gaussian_denoiser):
    schedule = make_schedule("linear")
    denoiser = Parameterized(gaussian_denoiser(schedule, MEAN, STD), schedule)
    result = ancestral_sample(denoiser, schedule, (200, 128), variance=variance, seeds=sample_seeds(1, 200))
    assert_matches_law(result.samples, exact_law(schedule, 1000, "ancestral", variance))


@pytest.mark.parametrize("parameterization", ["eps", "x0", "v"])
@pytest.mark.parametrize("variance", ["beta", "beta_tilde"])
def test_respaced_ancestral_reproduces_exact_law(parameterization, variance, gaussian_denoiser):
    schedule = make_schedule("cosine")
    denoiser = Parameterized(
        gaussian_denoiser(schedule, MEAN, STD, parameterization), schedule, parameterization
    )
    result = ancestral_sample(denoiser, schedule, (500, 48), steps=100, variance=variance,
                              seeds=sample_seeds(2, 500))  # fmt: skip
    assert_matches_law(result.samples, exact_law(schedule, 100, "ancestral", variance))


def test_exact_law_approaches_data_as_steps_grow():
    schedule = make_schedule("linear")
    for sampler, variance in [("ddim", "beta"), ("ancestral", "beta"), ("ancestral", "beta_tilde")]:
        errors = []
        for steps in (10, 100, 1000):
            m, s = exact_law(schedule, steps, sampler, variance)
            errors.append(abs(m - MEAN) + abs(s - STD))
        assert errors[0] > errors[1] > errors[2], (sampler, variance, errors)
        assert errors[2] < 0.015 * STD, (sampler, variance, errors)


def test_ddim_eta_one_law_is_ancestral_beta_tilde_law():
    schedule = make_schedule("cosine")
    ddim = exact_law(schedule, 20, "ddim", eta=1.0)
    ancestral = exact_law(schedule, 20, "ancestral", "beta_tilde")
    assert ddim == pytest.approx(ancestral, rel=1e-12)


@pytest.mark.parametrize("sampler", ["ddim", "ancestral"])
def test_parameterizations_of_one_denoiser_give_the_same_samples(sampler, gaussian_denoiser):
    schedule = make_schedule("linear")
    run = ddim_sample if sampler == "ddim" else ancestral_sample
    results = [
        run(
            Parameterized(gaussian_denoiser(schedule, MEAN, STD, p), schedule, p), schedule, (8, 4), steps=50
        ).samples
        for p in ("eps", "x0", "v")
    ]
    torch.testing.assert_close(results[1], results[0], rtol=0, atol=1e-4)
    torch.testing.assert_close(results[2], results[0], rtol=0, atol=1e-4)


def test_ddim_eta_zero_is_deterministic_given_x_T(gaussian_denoiser):
    schedule = make_schedule("linear")
    model = Parameterized(gaussian_denoiser(schedule, MEAN, STD), schedule)
    x_T = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    first = ddim_sample(model, schedule, x_T, steps=20, seeds=sample_seeds(1, 5)).samples
    second = ddim_sample(model, schedule, x_T, steps=20, seeds=sample_seeds(2, 5)).samples
    assert torch.equal(first, second)


@pytest.mark.parametrize("sampler", ["ddim", "ancestral"])
def test_two_point_mixture_keeps_its_weights(sampler, point_mixture_denoiser):
    schedule = make_schedule("linear")
    model = Parameterized(
        point_mixture_denoiser(schedule, torch.tensor([[-1.0], [1.0]]), [0.25, 0.75]), schedule
    )
    n = 2000 if sampler == "ddim" else 1000  # ancestral draws noise per sample and step: fewer
    if sampler == "ddim":
        samples = ddim_sample(model, schedule, (n, 1), steps=50).samples
    else:
        samples = ancestral_sample(model, schedule, (n, 1), steps=50, variance="beta_tilde").samples
    assert (samples.abs() - 1).abs().max() < 1e-3  # every sample lands on a data point
    assert abs((samples > 0).double().mean().item() - 0.75) < 5 * math.sqrt(0.75 * 0.25 / n)


@pytest.mark.parametrize("sampler", ["ddim", "ancestral"])
def test_point_mass_is_hit_exactly(sampler, point_mixture_denoiser):
    schedule = make_schedule("cosine")
    point = torch.tensor([[0.3, -0.7, 0.9]])
    model = Parameterized(point_mixture_denoiser(schedule, point, [1.0]), schedule)
    run = ddim_sample if sampler == "ddim" else ancestral_sample
    samples = run(model, schedule, (6, 3), steps=10).samples  # the last step returns x̂₀ = the point
    torch.testing.assert_close(samples, point.expand(6, 3), rtol=0, atol=1e-5)
