"""Epsilon scaling (Ning et al. 2024) in the parameterization wrapper: ε̂ / λ for every parameterization,
the identity at λ = 1, applied before x̂₀ is clipped, the same samples whichever quantity the network
predicts, every sampler, and the refusals of a bad λ."""

import math

import pytest
import torch

from ddpm.diffusion import make_schedule, predict_x0_eps
from ddpm.diffusion.eps_scaling import check_eps_scale, scale_eps
from ddpm.diffusion.prediction import Parameterized, to_prediction
from ddpm.diffusion.samplers import SAMPLERS, ddim_sample, sample_seeds
from ddpm.diffusion.samplers.sigmas import t_to_sigma

SCHEDULE = make_schedule("linear", 100)


def _inputs(batch=5):
    generator = torch.Generator().manual_seed(0)
    x_t = torch.randn(batch, 1, 3, 3, generator=generator, dtype=torch.float64)
    t = torch.tensor([0, 10, 37, 80, 99])[:batch]
    return x_t, t


def test_eps_prediction_is_divided_by_lambda_and_conditioning_passes_through():
    calls = []

    def model(x_t, t, **cond):
        calls.append(cond)
        return 0.3 * x_t + t.reshape(-1, 1, 1, 1) / 100

    x_t, t = _inputs()
    scaled = Parameterized(model, SCHEDULE, "eps", eps_scale=1.25)(x_t, t, class_labels=torch.arange(5))
    torch.testing.assert_close(scaled.eps, model(x_t, t) / 1.25, rtol=0, atol=0)
    assert torch.equal(calls[0]["class_labels"], torch.arange(5))


def test_unit_scale_returns_the_network_output_itself():
    x_t, _ = _inputs()
    output = torch.randn_like(x_t)
    assert scale_eps(x_t, output, torch.tensor(0.5, dtype=torch.float64), 1.0, "v") is output


@pytest.mark.parametrize("parameterization", ["x0", "v"])
def test_other_parameterizations_scale_the_noise_they_imply_and_keep_eq_4(
    gaussian_denoiser, parameterization
):
    x_t, t = _inputs()
    model = gaussian_denoiser(SCHEDULE, 0.3, 0.7, parameterization)
    alpha_bar = SCHEDULE.at(SCHEDULE.alpha_bar, t, x_t)  # (B, 1, 1, 1)
    _, eps = predict_x0_eps(x_t, model(x_t, t), alpha_bar, parameterization)
    x0_scaled, eps_scaled = Parameterized(model, SCHEDULE, parameterization, eps_scale=1.1)(x_t, t)
    torch.testing.assert_close(eps_scaled, eps / 1.1, rtol=1e-10, atol=1e-10)
    # x̂₀ and ε̂ / λ still add up to x_t through eq. 4
    torch.testing.assert_close(alpha_bar.sqrt() * x0_scaled + (1 - alpha_bar).sqrt() * eps_scaled, x_t)


@pytest.mark.parametrize("parameterization", ["x0", "v"])
def test_fractional_timesteps_use_the_sigma_samplers_noise_level(parameterization):
    x_t = torch.randn(3, 1, 2, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    t = torch.tensor([0.25, 41.5, 98.75], dtype=torch.float64)
    alpha_bar = torch.tensor([1 / (1 + t_to_sigma(float(k), SCHEDULE) ** 2) for k in t], dtype=torch.float64)
    alpha_bar = alpha_bar.reshape(-1, 1, 1, 1)

    def model(x, _t):
        return 0.4 * x - 0.1

    _, eps = predict_x0_eps(x_t, model(x_t, t), alpha_bar, parameterization)
    scaled = Parameterized(model, SCHEDULE, parameterization, eps_scale=1.2)(x_t, t)
    torch.testing.assert_close(scaled.eps, eps / 1.2)


@pytest.mark.parametrize("parameterization", ["eps", "x0", "v"])
def test_scaling_comes_before_the_clip(gaussian_denoiser, parameterization):
    """The scaled output is converted at the sampler's ᾱ and then clipped: the clip has the last word."""
    x_t, t = _inputs()
    x_t = 3 * x_t  # x̂₀ well outside [−1, 1]
    model = gaussian_denoiser(SCHEDULE, 0.3, 0.7, parameterization)
    ours = Parameterized(model, SCHEDULE, parameterization, eps_scale=1.1, clip_x0=1.0)(x_t, t, 0.25)
    scaled = scale_eps(x_t, model(x_t, t), SCHEDULE.at(SCHEDULE.alpha_bar, t, x_t), 1.1, parameterization)
    expected = to_prediction(x_t, scaled, torch.tensor(0.25, dtype=torch.float64), parameterization, 1.0)
    assert torch.equal(ours.x0, expected.x0) and torch.equal(ours.eps, expected.eps)
    assert ours.x0.abs().max() == 1.0


def test_samples_do_not_depend_on_what_the_network_predicts(gaussian_denoiser):
    """One Gaussian denoiser written as ε, x₀ and v: scaled DDIM chains coincide, and differ from λ = 1."""
    noise = torch.randn(6, 1, 2, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    samples = {}
    for parameterization in ("eps", "x0", "v"):
        denoiser = Parameterized(
            gaussian_denoiser(SCHEDULE, 0.2, 0.5, parameterization),
            SCHEDULE,
            parameterization,
            eps_scale=1.05,
        )
        samples[parameterization] = ddim_sample(denoiser, SCHEDULE, noise, steps=10).samples
    torch.testing.assert_close(samples["x0"], samples["eps"], rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(samples["v"], samples["eps"], rtol=1e-8, atol=1e-8)
    plain = Parameterized(gaussian_denoiser(SCHEDULE, 0.2, 0.5, "eps"), SCHEDULE)
    assert (samples["eps"] - ddim_sample(plain, SCHEDULE, noise, steps=10).samples).abs().max() > 1e-3


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_every_sampler_takes_the_scaled_denoiser(gaussian_denoiser, name):
    exact = gaussian_denoiser(SCHEDULE, 0.0, 0.5, "eps")

    def model(x, t):
        return exact(x, t.round().long())  # the σ-samplers pass fractional t

    shape, seeds = (3, 1, 2, 2), sample_seeds(0, 3)
    plain = SAMPLERS[name](Parameterized(model, SCHEDULE), SCHEDULE, shape, seeds=seeds, steps=5).samples
    scaled = SAMPLERS[name](
        Parameterized(model, SCHEDULE, eps_scale=1.05), SCHEDULE, shape, seeds=seeds, steps=5
    )
    assert torch.isfinite(scaled.samples).all()
    assert not torch.equal(scaled.samples, plain)


@pytest.mark.parametrize("bad", [0, -1.0, math.nan, math.inf, True, "1.05", None])
def test_bad_scales_are_refused_with_the_value_and_what_is_allowed(bad):
    with pytest.raises(ValueError, match=r"^eps_scale=.* is invalid; give a finite number > 0 \(1 = off"):
        check_eps_scale(bad)
    with pytest.raises(ValueError, match=r"^eps_scale="):
        Parameterized(lambda x, t: x, SCHEDULE, "eps", eps_scale=bad)


def test_the_message_names_the_setting_it_checks():
    with pytest.raises(ValueError, match=r"^run\.preview_eps_scale=0 is invalid"):
        check_eps_scale(0, "run.preview_eps_scale")
