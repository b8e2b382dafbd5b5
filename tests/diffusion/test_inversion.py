"""DDIM inversion against the exact probability-flow map of Gaussian data, reconstruction, slerp.

For data N(m, s² I) the DDIM ODE maps x₀ to x_t = √ᾱ m + √(ᾱ s² + 1 − ᾱ) (x₀ − m)/s (it keeps each
coordinate's standardised value), so inversion has a closed-form answer. Reconstruction of digits
with a trained model is tested in tests/test_editing.py.
"""

import math

import pytest
import torch

from ddpm.diffusion import make_schedule
from ddpm.diffusion.inversion import ddim_invert, ddim_reconstruct, slerp
from ddpm.diffusion.prediction import Parameterized
from ddpm.diffusion.samplers import ddim_sample, timesteps

SCHEDULE = make_schedule("linear", 1000)
MEAN, STD = 0.3, 0.5


def _data(dtype=torch.float64):
    generator = torch.Generator().manual_seed(0)
    return MEAN + STD * torch.randn(8, 2, 4, 4, dtype=dtype, generator=generator)


def _flow_map(x0, steps):
    """The exact x_t at the first visited timestep t_0 of a ``steps``-step uniform chain."""
    alpha_bar = SCHEDULE.alpha_bar[int(timesteps(SCHEDULE.num_steps, steps)[0])]
    return alpha_bar.sqrt() * MEAN + (alpha_bar * STD**2 + 1 - alpha_bar).sqrt() * (x0 - MEAN) / STD


@pytest.mark.parametrize("parameterization", ["eps", "x0", "v"])
def test_inversion_converges_to_the_exact_flow_map_at_first_order(gaussian_denoiser, parameterization):
    denoiser = Parameterized(
        gaussian_denoiser(SCHEDULE, MEAN, STD, parameterization), SCHEDULE, parameterization
    )
    x0 = _data()
    errors = []
    for steps in (10, 100, 1000):
        latents = ddim_invert(denoiser, SCHEDULE, x0, steps=steps)
        errors.append(float((latents - _flow_map(x0, steps)).abs().max()))
    # measured: 0.215, 0.0203, 0.0027 (the same for every parameterization)
    assert errors[2] < 0.005
    assert errors[0] > 5 * errors[1] > 25 * errors[2]


@pytest.mark.parametrize("parameterization", ["eps", "x0", "v"])
def test_reconstruction_error_shrinks_with_steps(gaussian_denoiser, parameterization):
    denoiser = Parameterized(
        gaussian_denoiser(SCHEDULE, MEAN, STD, parameterization), SCHEDULE, parameterization
    )
    x0 = _data()
    mse = {}
    for steps in (10, 100, 1000):
        _, rebuilt = ddim_reconstruct(denoiser, SCHEDULE, x0, steps=steps)
        mse[steps] = float((rebuilt - x0).pow(2).mean())
    # measured: 2.2e-2, 2.6e-4, 2.7e-6
    assert mse[1000] < 1e-5
    assert mse[10] > 30 * mse[100] > 900 * mse[1000]


def test_a_model_blind_to_x_t_is_inverted_exactly():
    # With ε̂ independent of x_t, the ε̂ read at the step's start is the one sampling reads at its end:
    # inversion is the exact inverse of the DDIM sampler (eq. 12), for any number of steps.
    eps_field = torch.randn(3, 1, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(2))

    def blind_net(x_t, t):
        return eps_field + 1e-3 * t.double().reshape(-1, 1, 1, 1)  # depends on t, not on x_t

    blind = Parameterized(blind_net, SCHEDULE)

    x0 = torch.randn(3, 1, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    for steps in (1, 7, 50):
        latents = ddim_invert(blind, SCHEDULE, x0, steps=steps)
        rebuilt = ddim_sample(blind, SCHEDULE, latents, steps=steps, dtype=torch.float64).samples
        torch.testing.assert_close(rebuilt, x0, rtol=0, atol=1e-9)


def test_inversion_is_deterministic_keeps_dtype_and_passes_cond(gaussian_denoiser):
    calls = []
    exact = gaussian_denoiser(SCHEDULE, MEAN, STD)

    def model(x_t, t, class_labels):
        calls.append(class_labels)
        return exact(x_t, t)

    x0 = _data(torch.float32)
    labels = torch.arange(8)
    denoiser = Parameterized(model, SCHEDULE)
    first = ddim_invert(denoiser, SCHEDULE, x0, steps=20, cond={"class_labels": labels})
    second = ddim_invert(denoiser, SCHEDULE, x0, steps=20, cond={"class_labels": labels})
    assert torch.equal(first, second) and first.dtype == torch.float32
    assert len(calls) == 40 and all(c is labels for c in calls)


def test_callback_sees_timesteps_from_low_to_high_noise(gaussian_denoiser):
    seen = []
    ddim_invert(Parameterized(gaussian_denoiser(SCHEDULE, MEAN, STD), SCHEDULE), SCHEDULE, _data(), steps=5,
                callback=lambda i, t, x: seen.append((i, t)))  # fmt: skip
    assert seen == [(0, 0), (1, 200), (2, 400), (3, 600), (4, 800)]


def test_inversion_errors(gaussian_denoiser):
    model = Parameterized(gaussian_denoiser(SCHEDULE, MEAN, STD), SCHEDULE)
    with pytest.raises(ValueError, match=r"x0 must be a floating tensor \(B, …\)"):
        ddim_invert(model, SCHEDULE, torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"steps=0 is invalid"):
        ddim_invert(model, SCHEDULE, _data(), steps=0)


def test_slerp_returns_the_endpoints_exactly():
    generator = torch.Generator().manual_seed(4)
    a, b = torch.randn(1, 8, 8, generator=generator), torch.randn(1, 8, 8, generator=generator)
    assert torch.equal(slerp(a, b, 0.0), a) and torch.equal(slerp(a, b, 1.0), b)
    assert torch.equal(slerp(a, b, 0), a) and torch.equal(slerp(a, b, 1), b)


def test_slerp_follows_the_great_circle():
    a = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    b = torch.tensor([0.0, 2.0, 0.0], dtype=torch.float64)  # orthogonal, twice as long
    for w in (0.25, 0.5, 0.9):
        expected = math.cos(w * math.pi / 2) * a + math.sin(w * math.pi / 2) * b
        torch.testing.assert_close(slerp(a, b, w), expected, rtol=0, atol=1e-12)
    # Two N(0, I) noises stay at norm ≈ √d along the way; a straight line would sag to ≈ √(d/2).
    generator = torch.Generator().manual_seed(5)
    x, y = torch.randn(4096, generator=generator), torch.randn(4096, generator=generator)
    assert abs(float(slerp(x, y, 0.5).norm()) / 64 - 1) < 0.03
    assert abs(float(torch.lerp(x, y, 0.5).norm()) / 64 - math.sqrt(0.5)) < 0.03


def test_slerp_of_parallel_vectors_is_the_straight_line():
    a = torch.tensor([1.0, 2.0, 3.0])
    torch.testing.assert_close(slerp(a, 3 * a, 0.5), 2 * a)


@pytest.mark.parametrize(
    "a, b, weight, match",
    [
        (torch.ones(3), torch.ones(4), 0.5, r"slerp needs a and b of one shape, got \(3,\) and \(4,\)"),
        (torch.ones(3), torch.ones(3), 1.5, r"slerp weight=1\.5 is invalid; it must be a number in \[0, 1\]"),
        (torch.ones(3), torch.ones(3), "half", r"slerp weight='half' is invalid"),
        (torch.zeros(3), torch.ones(3), 0.5, r"slerp of a zero vector is undefined"),
        (torch.ones(3), -torch.ones(3), 0.5, r"slerp between opposite vectors is undefined"),
    ],
)
def test_slerp_errors(a, b, weight, match):
    with pytest.raises(ValueError, match=match):
        slerp(a, b, weight)
