"""The parameterization wrapper: one denoiser for every sampler, whatever the network predicts.

ε-, x₀- and v-networks written from one exact Gaussian denoiser give one Prediction; the pair keeps
eq. 4 with and without clipping; the sampler's ᾱ is the one used; and the error paths.
"""

import pytest
import torch

from ddpm.diffusion import make_schedule
from ddpm.diffusion.prediction import Parameterized, Prediction, alpha_bar_at
from ddpm.diffusion.samplers import SAMPLERS, sample_seeds
from ddpm.diffusion.samplers.sigmas import sampling_sigmas, t_to_sigma

SCHEDULE = make_schedule("linear", 100)
MEAN, STD = 0.3, 0.6


def _inputs(dtype=torch.float64):
    generator = torch.Generator().manual_seed(0)
    x_t = torch.randn(4, 2, 3, 3, generator=generator, dtype=torch.float64).to(dtype)
    return x_t, torch.tensor([0, 17, 60, 99])


def _eq_4(prediction: Prediction, alpha_bar: torch.Tensor) -> torch.Tensor:
    """x_t rebuilt from the pair: √ᾱ x̂₀ + √(1 − ᾱ) ε̂."""
    return alpha_bar.sqrt() * prediction.x0 + (1 - alpha_bar).sqrt() * prediction.eps


@pytest.mark.parametrize("sampler_level", [False, True])
def test_eps_x0_and_v_networks_of_one_denoiser_give_one_prediction(gaussian_denoiser, sampler_level):
    x_t, t = _inputs()
    alpha_bar = None  # ᾱ(t) per sample, from the schedule
    if sampler_level:  # a sampler's step: one t for the batch, and its ᾱ_t as a float
        t = torch.full((4,), 60)
        alpha_bar = float(SCHEDULE.alpha_bar[60])
    predictions = {
        p: Parameterized(gaussian_denoiser(SCHEDULE, MEAN, STD, p), SCHEDULE, p)(x_t, t, alpha_bar)
        for p in ("eps", "x0", "v")
    }
    for p in ("x0", "v"):
        torch.testing.assert_close(predictions[p].x0, predictions["eps"].x0, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(predictions[p].eps, predictions["eps"].eps, rtol=1e-10, atol=1e-10)
    level = SCHEDULE.at(SCHEDULE.alpha_bar, t, x_t)
    torch.testing.assert_close(_eq_4(predictions["v"], level), x_t, rtol=1e-12, atol=1e-12)
    # the ε-network's ε̂ is its output, untouched
    assert torch.equal(predictions["eps"].eps, gaussian_denoiser(SCHEDULE, MEAN, STD, "eps")(x_t, t))


@pytest.mark.parametrize("parameterization", ["eps", "x0", "v"])
def test_the_samplers_alpha_bar_is_the_one_used_and_arithmetic_stays_in_x_ts_dtype(parameterization):
    x_t, t = _inputs(torch.float32)
    output = torch.linspace(-2, 2, x_t.numel()).reshape(x_t.shape)
    prediction = Parameterized(lambda x, _t: output, SCHEDULE, parameterization)(x_t, t, 0.25)
    assert prediction.x0.dtype == prediction.eps.dtype == torch.float32  # a 0-d float64 ᾱ does not promote
    x0 = {"eps": 2 * x_t - 3**0.5 * output, "x0": output, "v": 0.5 * x_t - 0.75**0.5 * output}[
        parameterization
    ]
    torch.testing.assert_close(prediction.x0, x0, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(_eq_4(prediction, torch.tensor(0.25)), x_t, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("parameterization", ["eps", "x0", "v"])
def test_clipping_bounds_x0_and_keeps_eq_4(gaussian_denoiser, parameterization):
    x_t, t = _inputs()
    x_t = 4 * x_t  # far from the data, so x̂₀ leaves [−c, c] at low noise
    model = gaussian_denoiser(SCHEDULE, MEAN, STD, parameterization)
    clipped = Parameterized(model, SCHEDULE, parameterization, clip_x0=0.5)(x_t, t)
    plain = Parameterized(model, SCHEDULE, parameterization)(x_t, t)
    assert clipped.x0.abs().max() <= 0.5 < plain.x0.abs().max()
    assert torch.equal(clipped.x0, plain.x0.clamp(-0.5, 0.5))
    level = SCHEDULE.at(SCHEDULE.alpha_bar, t, x_t)
    torch.testing.assert_close(_eq_4(clipped, level), x_t, rtol=1e-12, atol=1e-12)


def test_without_a_level_fractional_timesteps_use_the_sigma_map():
    x_t = torch.randn(3, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    t = torch.tensor([0.5, 30.25, 98.0], dtype=torch.float64)
    expected = torch.tensor([1 / (1 + t_to_sigma(float(k), SCHEDULE) ** 2) for k in t], dtype=torch.float64)
    torch.testing.assert_close(alpha_bar_at(SCHEDULE, t, x_t), expected.reshape(3, 1), rtol=1e-14, atol=0)
    prediction = Parameterized(lambda x, _t: 0.2 * x, SCHEDULE, "eps")(x_t, t)
    torch.testing.assert_close(_eq_4(prediction, expected.reshape(3, 1)), x_t, rtol=1e-12, atol=1e-12)


def test_the_network_gets_t_and_the_conditioning_as_given():
    calls = []

    def net(x_t, t, **cond):
        calls.append((t, cond))
        return x_t

    x_t, t = _inputs()
    labels = torch.arange(4)
    Parameterized(net, SCHEDULE)(x_t, t, 0.5, class_labels=labels)
    assert calls[0][0] is t and calls[0][1] == {"class_labels": labels}


def test_a_network_output_of_another_shape_is_refused():
    x_t, t = _inputs()
    denoiser = Parameterized(lambda x, _t: torch.cat([x, x], dim=1), SCHEDULE)
    with pytest.raises(
        ValueError, match=r"model output has shape \(4, 4, 3, 3\) but x_t has \(4, 2, 3, 3\); "
    ):
        denoiser(x_t, t)
    for name in ("ddpm", "euler"):
        with pytest.raises(ValueError, match=r"the samplers need a prediction of x_t's shape"):
            SAMPLERS[name](denoiser, SCHEDULE, (2, 3), steps=2)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"parameterization": "score"}, r"unknown parameterization 'score'; allowed: eps, x0, v"),
        ({"clip_x0": 0.0}, r"clip_x0=0\.0 is invalid; use None \(no clipping\) or a positive bound"),
        ({"clip_x0": -1.0}, r"clip_x0=-1\.0 is invalid"),
        ({"eps_scale": 0.0}, r"eps_scale=0\.0 is invalid; give a finite number > 0"),
    ],
)
def test_bad_settings_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Parameterized(lambda x, t: x, SCHEDULE, **kwargs)


class LevelSpy:
    """A denoiser written directly as (x̂₀, ε̂) at the level it is told: records (t, ᾱ) of each call."""

    def __init__(self) -> None:
        self.calls: list[tuple[torch.Tensor, float]] = []

    def __call__(self, x_t, t, alpha_bar, **cond):
        self.calls.append((t, alpha_bar))
        eps = 0.5 * x_t
        return Prediction((x_t - (1 - alpha_bar) ** 0.5 * eps) / alpha_bar**0.5, eps)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_every_sampler_tells_the_denoiser_its_own_noise_level(name):
    spy = LevelSpy()
    result = SAMPLERS[name](spy, SCHEDULE, (2, 3), steps=4, seeds=sample_seeds(0, 2))
    assert torch.isfinite(result.samples).all() and len(spy.calls) == result.nfe
    for t, alpha_bar in spy.calls:
        assert isinstance(alpha_bar, float) and t.shape == (2,)
        if t.is_floating_point():  # σ-samplers at fractional t(σ): ᾱ = 1/(1 + σ²) of their own grid
            levels = sampling_sigmas(SCHEDULE, 4, "karras")
            assert alpha_bar in [1 / (1 + level.sigma**2) for level in levels]
        elif name in ("ddpm", "ddim"):  # the respaced chain's ᾱ_t, exactly
            assert alpha_bar == float(SCHEDULE.alpha_bar[t[0]])
        else:
            assert alpha_bar == pytest.approx(float(SCHEDULE.alpha_bar[t[0]]), rel=1e-12)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_a_bare_network_is_refused_with_what_to_wrap_it_in(name):
    match = r"the denoiser returned Tensor, not a Prediction .*; wrap the network as Parameterized\(net, "
    with pytest.raises(TypeError, match=match):
        SAMPLERS[name](lambda x, t, *_: 0.1 * x, SCHEDULE, (2, 3), steps=2)


def test_a_prediction_unpacks_as_x0_then_eps():
    x0, eps = Prediction(torch.zeros(1), torch.ones(1))
    assert x0.item() == 0 and eps.item() == 1
