"""Learned-range variances (Nichol & Dhariwal 2021, eq. 15) through the wrapper and the samplers.

The ancestral step matches diffusers' ``DDPMScheduler(variance_type="learned_range")`` given the same
model output and noise; v = 1 and v = 0 are the fixed β and β̃ runs; the samplers without a Markovian
reverse step (DDIM, DPM-Solver++, the σ-samplers) ignore the variance; guidance leaves it alone.
"""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import DDPMScheduler

from ddpm.diffusion.guidance import ClassifierFreeGuidance
from ddpm.diffusion.inpaint import repaint
from ddpm.diffusion.prediction import Parameterized, Prediction
from ddpm.diffusion.process import q_sample, training_target
from ddpm.diffusion.samplers import (
    SAMPLERS,
    ancestral_sample,
    ancestral_step,
    respaced_chain,
    sample_seeds,
    timesteps,
)
from ddpm.diffusion.schedules import make_schedule
from ddpm.diffusion.variances import learned_range_log_variance, split_variance_channels

F64 = torch.float64
T = 1000
SHAPE = (3, 2, 4, 4)
PREDICTIONS = {"eps": "epsilon", "x0": "sample", "v": "v_prediction"}
SPACINGS = {"uniform": "leading", "trailing": "trailing"}
DIFFUSERS_SCHEDULES = {"linear": "linear", "cosine": "squaredcos_cap_v2"}


def _with_variance(net, raw):
    """``net``'s output followed by the variance channels ``raw(x_t, t)`` (B, 2C, …)."""
    return lambda x, t, **cond: torch.cat([net(x, t, **cond), raw(x, t)], dim=1)


def _constant(value: float):
    return lambda x, t: torch.full_like(x, value)


def _small_net(x, t):
    return 0.1 * x + 0.01 * t.to(x.dtype).reshape(-1, *[1] * (x.ndim - 1)) / 1000


# --- The wrapper ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("parameterization", ["eps", "x0", "v"])
def test_the_wrapper_splits_the_output_and_keeps_the_prediction_bit_identical(parameterization):
    schedule = make_schedule("linear", 100)
    x_t = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([0, 50, 99])
    raw = torch.linspace(-1, 1, x_t.numel()).reshape(SHAPE)
    net = _with_variance(_small_net, lambda x, _t: raw)
    for kwargs in ({}, {"eps_scale": 1.05, "clip_x0": 1.0}):
        learned = Parameterized(net, schedule, parameterization, learned_variance=True, **kwargs)(x_t, t)
        fixed = Parameterized(_small_net, schedule, parameterization, **kwargs)(x_t, t)
        assert torch.equal(learned.x0, fixed.x0) and torch.equal(learned.eps, fixed.eps)
        assert torch.equal(learned.variance_frac, (raw + 1) / 2) and fixed.variance_frac is None
    x0, eps = learned  # still unpacks as the pair
    assert torch.equal(x0, learned.x0) and torch.equal(eps, learned.eps)


def test_a_learned_variance_network_must_output_twice_the_channels():
    schedule = make_schedule("linear", 100)
    x_t = torch.zeros(2, 3, 4, 4)
    denoiser = Parameterized(_small_net, schedule, learned_variance=True)
    with pytest.raises(ValueError, match=r"model output has shape \(2, 3, 4, 4\) but x_t has \(2, 3, 4, 4\); "
                                         r"a learned-variance model must output \(2, 6, 4, 4\)"):  # fmt: skip
        denoiser(x_t, torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"learned_variance='yes' is invalid; give True or False"):
        Parameterized(_small_net, schedule, learned_variance="yes")
    with pytest.raises(ValueError, match=r"must output \(2, 4\)"):
        split_variance_channels(torch.zeros(2, 3), torch.zeros(2, 2))


def test_a_prediction_without_a_variance_has_none():
    prediction = Prediction(torch.zeros(1), torch.ones(1))
    assert prediction.variance_frac is None
    assert len(list(prediction)) == 2


# --- (d) the ancestral step against diffusers' learned_range ------------------------------------------


def _step_inputs(schedule, t: int, parameterization: str, seed: int):
    """(x_t, model output (B, 2C, …)) in float64: a prediction off by 10%, variance channels in ±1.2."""
    g = torch.Generator().manual_seed(seed)
    x0 = torch.rand(SHAPE, generator=g, dtype=F64) * 2 - 1
    eps = torch.randn(SHAPE, generator=g, dtype=F64)
    t_batch = torch.full((SHAPE[0],), t)
    x_t = q_sample(schedule, x0, t_batch, eps)
    target = training_target(x0, eps, schedule.at(schedule.alpha_bar, t_batch, x0), parameterization)
    raw = 2.4 * torch.rand(SHAPE, generator=g, dtype=F64) - 1.2
    return x_t, torch.cat([target + 0.1 * torch.randn(SHAPE, generator=g, dtype=F64), raw], dim=1)


@pytest.mark.parametrize("schedule_name", ["linear", "cosine"])
@pytest.mark.parametrize("parameterization", ["eps", "x0", "v"])
@pytest.mark.parametrize("clip", [None, 1.0])
@pytest.mark.parametrize("spacing", ["uniform", "trailing"])
@pytest.mark.parametrize("steps", [10, 50, 1000])
def test_the_learned_variance_step_matches_ddpm_schedulers_learned_range(
    schedule_name, parameterization, clip, spacing, steps
):
    schedule = make_schedule(schedule_name, T)
    scheduler = DDPMScheduler(
        num_train_timesteps=T, beta_schedule=DIFFUSERS_SCHEDULES[schedule_name],
        prediction_type=PREDICTIONS[parameterization], clip_sample=clip is not None,
        clip_sample_range=clip or 1.0, timestep_spacing=SPACINGS[spacing], steps_offset=0,
        variance_type="learned_range",
    )  # fmt: skip
    scheduler.alphas_cumprod = schedule.alpha_bar.clone()  # float64 on both sides: only formulas differ
    scheduler.set_timesteps(steps)
    chain = respaced_chain(schedule, timesteps(T, steps, spacing))
    assert [step.t for step in chain] == scheduler.timesteps.tolist()
    indices = list(range(steps)) if steps <= 10 else [0, 1, steps // 2, steps - 2, steps - 1]
    for i in indices:
        t, alpha_bar, alpha_bar_prev = chain[i]
        x_t, output = _step_inputs(schedule, t, parameterization, seed=i)
        noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(100 + i), dtype=F64)
        theirs = scheduler.step(output, t, x_t, generator=torch.Generator().manual_seed(100 + i))
        denoiser = Parameterized(lambda x, _t, out=output: out, schedule, parameterization, clip_x0=clip,
                                 learned_variance=True)  # fmt: skip
        prediction = denoiser(x_t, torch.full((SHAPE[0],), t), alpha_bar)
        last = i == steps - 1
        if last and t > 0:
            continue  # diffusers adds noise at trailing spacing's last step; Algorithm 2 does not
        ours = ancestral_step(x_t, prediction.x0, alpha_bar, alpha_bar_prev, noise=None if last else noise,
                              variance_frac=prediction.variance_frac)  # fmt: skip
        assert (ours - theirs.prev_sample).abs().max() <= 1e-5, (i, t)
        assert (ours - theirs.prev_sample).abs().max() <= 1e-9 * theirs.prev_sample.abs().max().clamp(min=1)
        if not last:  # the noise term is there and is the learned one, not β' or β̃'
            beta = 1 - alpha_bar / alpha_bar_prev
            beta_tilde = beta * (1 - alpha_bar_prev) / (1 - alpha_bar)
            log_variance = learned_range_log_variance(
                prediction.variance_frac, math.log(beta), math.log(beta_tilde)
            )
            sigma = (0.5 * log_variance).exp()
            mean = ancestral_step(x_t, prediction.x0, alpha_bar, alpha_bar_prev)
            torch.testing.assert_close(ours - mean, sigma * noise, rtol=1e-9, atol=1e-12)


# --- The samplers -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "variance"), [(1.0, "beta"), (-1.0, "beta_tilde")])
@pytest.mark.parametrize("steps", [None, 20])
def test_the_ends_of_the_learned_range_are_the_fixed_variances(gaussian_denoiser, raw, variance, steps):
    schedule = make_schedule("linear", T)
    model = gaussian_denoiser(schedule, 0.3, 0.5, "eps")
    seeds = sample_seeds(1, 2)
    learned = Parameterized(_with_variance(model, _constant(raw)), schedule, learned_variance=True)
    ours = ancestral_sample(learned, schedule, (2, 1, 4, 4), steps=steps, variance="beta", seeds=seeds)
    fixed = ancestral_sample(Parameterized(model, schedule), schedule, (2, 1, 4, 4), steps=steps,
                             variance=variance, seeds=seeds)  # fmt: skip
    torch.testing.assert_close(ours.samples, fixed.samples, rtol=1e-5, atol=1e-5)
    other = "beta_tilde" if variance == "beta" else "beta"
    different = ancestral_sample(Parameterized(model, schedule), schedule, (2, 1, 4, 4), steps=steps,
                                 variance=other, seeds=seeds)  # fmt: skip
    assert (ours.samples - different.samples).abs().max() > 1e-3  # the variance is really used


@pytest.mark.parametrize("name", sorted(set(SAMPLERS) - {"ddpm"}))
def test_samplers_without_a_markovian_step_ignore_the_learned_variance(name):
    schedule = make_schedule("linear", T)
    model = _small_net  # the σ-samplers call it at fractional t too
    seeds = sample_seeds(2, 2)
    options = {"eta": 0.5} if name == "ddim" else {}
    learned = Parameterized(_with_variance(model, _constant(0.7)), schedule, learned_variance=True)
    ours = SAMPLERS[name](learned, schedule, (2, 1, 4, 4), steps=8, seeds=seeds, **options)
    plain = SAMPLERS[name](
        Parameterized(model, schedule), schedule, (2, 1, 4, 4), steps=8, seeds=seeds, **options
    )
    assert torch.equal(ours.samples, plain.samples)


@pytest.mark.parametrize(("raw", "variance"), [(1.0, "beta"), (-1.0, "beta_tilde")])
def test_repaint_uses_the_learned_variance(gaussian_denoiser, raw, variance):
    schedule = make_schedule("linear", 200)
    model = gaussian_denoiser(schedule, 0.3, 0.5, "eps")
    image = torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(0)) * 2 - 1
    mask = torch.zeros(2, 1, 4, 4)
    mask[..., :2] = 1
    options = {"steps": 10, "jump_length": 2, "resamples": 2, "seeds": sample_seeds(3, 2)}
    learned = Parameterized(_with_variance(model, _constant(raw)), schedule, learned_variance=True)
    ours = repaint(learned, schedule, image, mask, variance="beta_tilde" if raw > 0 else "beta", **options)
    fixed = repaint(Parameterized(model, schedule), schedule, image, mask, variance=variance, **options)
    torch.testing.assert_close(ours.samples, fixed.samples, rtol=1e-5, atol=1e-5)


# --- Guidance -----------------------------------------------------------------------------------------


def test_guidance_extrapolates_the_prediction_and_keeps_the_conditional_variance():
    def net(x, t, class_labels):
        shift = class_labels.to(x.dtype).reshape(-1, *[1] * (x.ndim - 1))
        return torch.cat([x + shift, 0.1 * shift.expand_as(x) - 0.5], dim=1)  # (B, 2C, …)

    x_t = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    t, labels = torch.tensor([5, 5]), torch.tensor([2, 1])
    guided = ClassifierFreeGuidance(net, 3.0, null_label=4, learned_variance=True)(
        x_t, t, class_labels=labels
    )
    conditional, unconditional = net(x_t, t, labels), net(x_t, t, torch.full((2,), 4))
    torch.testing.assert_close(
        guided[:, :3], unconditional[:, :3] + 3.0 * (conditional[:, :3] - unconditional[:, :3])
    )
    assert torch.equal(guided[:, 3:], conditional[:, 3:])
    plain = ClassifierFreeGuidance(net, 3.0, null_label=4)(x_t, t, class_labels=labels)
    assert not torch.allclose(plain[:, 3:], conditional[:, 3:])  # without the flag it would extrapolate both
