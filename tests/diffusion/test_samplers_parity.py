"""Parity with diffusers' DDPMScheduler and DDIMScheduler, used as an oracle.

One step: both sides in float64 on our float64 ᾱ (diffusers' own float32 ᾱ is checked to agree
first), fed the same x_t, model output and noise, so any difference is in the formulas. Whole runs:
data in float32 on both sides, diffusers' pipeline loop drawing with a list of per-sample generators,
which yields exactly our per-sample noise. diffusers also gets our float64 ᾱ there: from its float32
ᾱ, β' = 1 − ᾱ_t/ᾱ_{t−1} ≈ 1e-4 keeps only ~3 digits, which moves a 1000-step run by ~3e-4.
"""

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler
from diffusers.utils.torch_utils import randn_tensor

from ddpm.diffusion.prediction import Parameterized
from ddpm.diffusion.process import q_sample, training_target
from ddpm.diffusion.samplers import (
    ancestral_sample,
    ancestral_step,
    ddim_sample,
    ddim_step,
    respaced_chain,
    sample_seeds,
    timesteps,
)
from ddpm.diffusion.schedules import make_schedule

T = 1000
SCHEDULES = {"linear": "linear", "cosine": "squaredcos_cap_v2"}  # ours → diffusers' beta_schedule
PREDICTIONS = {"eps": "epsilon", "x0": "sample", "v": "v_prediction"}
VARIANCES = {"beta_tilde": "fixed_small", "beta": "fixed_large"}
SPACINGS = {"uniform": "leading", "trailing": "trailing"}
SHAPE = (3, 2, 4, 4)


def _diffusers_config(schedule, prediction, clip, spacing) -> dict:
    return {
        "num_train_timesteps": T,
        "beta_schedule": SCHEDULES[schedule],
        "prediction_type": PREDICTIONS[prediction],
        "clip_sample": clip is not None,
        "clip_sample_range": clip or 1.0,
        "thresholding": False,
        "timestep_spacing": SPACINGS[spacing],
        "steps_offset": 0,
    }


def _use_our_alpha_bar(scheduler, schedule) -> None:
    """Check diffusers' float32 ᾱ against ours, then give it ours in float64."""
    torch.testing.assert_close(scheduler.alphas_cumprod.double(), schedule.alpha_bar, rtol=1e-4, atol=1e-7)
    scheduler.alphas_cumprod = schedule.alpha_bar.clone()


def _step_inputs(schedule, t: int, parameterization: str, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A realistic (x_t, model output) pair in float64: x_t from data in [−1, 1], output off by 10%."""
    g = torch.Generator().manual_seed(seed)
    x0 = torch.rand(SHAPE, generator=g, dtype=torch.float64) * 2 - 1
    eps = torch.randn(SHAPE, generator=g, dtype=torch.float64)
    t_batch = torch.full((SHAPE[0],), t)
    x_t = q_sample(schedule, x0, t_batch, eps)
    alpha_bar = schedule.at(schedule.alpha_bar, t_batch, x0)
    target = training_target(x0, eps, alpha_bar, parameterization)
    return x_t, target + 0.1 * torch.randn(SHAPE, generator=g, dtype=torch.float64)


def _predict(schedule, x_t, output, t: int, alpha_bar: float, parameterization: str, clip):
    """(x̂₀, ε̂) of the given model output through the wrapper every sampler calls, at the chain's ᾱ_t."""
    denoiser = Parameterized(lambda x, _t: output, schedule, parameterization, clip_x0=clip)
    return denoiser(x_t, torch.full((x_t.shape[0],), t), alpha_bar)


def _assert_same(ours: torch.Tensor, expected: torch.Tensor, where) -> None:
    """Float64 agreement to 1e-9, relative where |expected| > 1 (without clipping, cosine's x̂₀ at
    t = 999 reaches thousands: 1/√ᾱ ≈ 2·10⁴)."""
    assert ours.dtype == torch.float64
    error = (ours - expected).abs() / expected.abs().clamp(min=1)
    assert error.max() <= 1e-9, where


def _checked_indices(steps: int) -> list[int]:
    return list(range(steps)) if steps <= 10 else [0, 1, 2, steps // 2, steps - 3, steps - 2, steps - 1]


@pytest.mark.parametrize("schedule_name", ["linear", "cosine"])
@pytest.mark.parametrize("parameterization", ["eps", "x0", "v"])
@pytest.mark.parametrize("clip", [None, 1.0])
@pytest.mark.parametrize("variance", ["beta_tilde", "beta"])
@pytest.mark.parametrize("spacing", ["uniform", "trailing"])
@pytest.mark.parametrize("steps", [10, 50, 1000])
def test_ancestral_step_matches_ddpm_scheduler(
    schedule_name, parameterization, clip, variance, spacing, steps
):
    schedule = make_schedule(schedule_name, T)
    scheduler = DDPMScheduler(**_diffusers_config(schedule_name, parameterization, clip, spacing),
                              variance_type=VARIANCES[variance])  # fmt: skip
    _use_our_alpha_bar(scheduler, schedule)
    scheduler.set_timesteps(steps)
    chain = respaced_chain(schedule, timesteps(T, steps, spacing))
    assert [step.t for step in chain] == scheduler.timesteps.tolist()
    for i in _checked_indices(steps):
        t, alpha_bar, alpha_bar_prev = chain[i]
        x_t, output = _step_inputs(schedule, t, parameterization, seed=i)
        noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(100 + i), dtype=torch.float64)
        theirs = scheduler.step(output, t, x_t, generator=torch.Generator().manual_seed(100 + i))
        last = i == steps - 1
        x0_pred = _predict(schedule, x_t, output, t, alpha_bar, parameterization, clip).x0
        ours = ancestral_step(
            x_t, x0_pred, alpha_bar, alpha_bar_prev, variance=variance, noise=None if last else noise
        )
        expected = theirs.prev_sample
        if last and t > 0 and variance == "beta":
            # diffusers adds noise whenever t > 0, so also at trailing spacing's last step (σ² = 1 − ᾱ_t);
            # Algorithm 2 sets z = 0 at the last step, and so do we.
            expected = expected - (1 - alpha_bar) ** 0.5 * noise
        _assert_same(ours, expected, (i, t))
        _assert_same(x0_pred, theirs.pred_original_sample, (i, t))


@pytest.mark.parametrize("schedule_name", ["linear", "cosine"])
@pytest.mark.parametrize("parameterization", ["eps", "x0", "v"])
@pytest.mark.parametrize("clip", [None, 1.0])
@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("spacing", ["uniform", "trailing"])
@pytest.mark.parametrize("steps", [10, 50])
def test_ddim_step_matches_ddim_scheduler(schedule_name, parameterization, clip, eta, spacing, steps):
    schedule = make_schedule(schedule_name, T)
    scheduler = DDIMScheduler(**_diffusers_config(schedule_name, parameterization, clip, spacing),
                              set_alpha_to_one=True)  # fmt: skip
    _use_our_alpha_bar(scheduler, schedule)
    scheduler.set_timesteps(steps)
    chain = respaced_chain(schedule, timesteps(T, steps, spacing))
    assert [step.t for step in chain] == scheduler.timesteps.tolist()
    for i in _checked_indices(steps):
        t, alpha_bar, alpha_bar_prev = chain[i]
        x_t, output = _step_inputs(schedule, t, parameterization, seed=i)
        noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(100 + i), dtype=torch.float64)
        # Ours recomputes ε̂ from the clipped x̂₀, which is diffusers' use_clipped_model_output=True.
        theirs = scheduler.step(output, t, x_t, eta=eta, use_clipped_model_output=True, variance_noise=noise)
        prediction = _predict(schedule, x_t, output, t, alpha_bar, parameterization, clip)
        ours = ddim_step(
            x_t, prediction, alpha_bar, alpha_bar_prev, eta=eta, noise=noise if eta > 0 else None
        )
        x0_pred = prediction.x0
        _assert_same(ours, theirs.prev_sample, (i, t))
        _assert_same(x0_pred, theirs.pred_original_sample, (i, t))


def _diffusers_run(scheduler, model, seeds, shape, **step_kwargs) -> torch.Tensor:
    """diffusers' DDPMPipeline / DDIMPipeline loop with one generator per sample."""
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    x = randn_tensor((len(seeds), *shape), generator=generators)
    for t in scheduler.timesteps:
        output = model(x, torch.full((len(seeds),), int(t)))
        x = scheduler.step(output, t, x, generator=generators, **step_kwargs).prev_sample
    return x


@pytest.mark.parametrize("schedule_name", ["linear", "cosine"])
@pytest.mark.parametrize("parameterization", ["eps", "v"])
@pytest.mark.parametrize(("steps", "variance"), [(20, "beta_tilde"), (20, "beta"), (None, "beta")])
def test_ancestral_run_matches_ddpm_scheduler(
    schedule_name, parameterization, steps, variance, gaussian_denoiser
):
    schedule = make_schedule(schedule_name, T)
    model = gaussian_denoiser(schedule, mean=0.5, std=0.3, parameterization=parameterization)
    scheduler = DDPMScheduler(**_diffusers_config(schedule_name, parameterization, None, "uniform"),
                              variance_type=VARIANCES[variance])  # fmt: skip
    _use_our_alpha_bar(scheduler, schedule)
    if steps is not None:  # without set_timesteps diffusers walks all T steps, t → t − 1
        scheduler.set_timesteps(steps)
    seeds = sample_seeds(3, 2)
    theirs = _diffusers_run(scheduler, model, seeds, (1, 4, 4))
    ours = ancestral_sample(Parameterized(model, schedule, parameterization), schedule, (2, 1, 4, 4),
                            steps=steps, variance=variance, seeds=seeds)  # fmt: skip
    assert (ours.samples - theirs).abs().max() <= 1e-5


@pytest.mark.parametrize("schedule_name", ["linear", "cosine"])
@pytest.mark.parametrize("eta", [0.0, 1.0])
@pytest.mark.parametrize("spacing", ["uniform", "trailing"])
def test_ddim_run_matches_ddim_scheduler(schedule_name, eta, spacing, point_mixture_denoiser):
    schedule = make_schedule(schedule_name, T)
    model = point_mixture_denoiser(schedule, torch.tensor([[-0.5, 0.2], [0.7, 0.1]]), [0.3, 0.7])
    scheduler = DDIMScheduler(**_diffusers_config(schedule_name, "eps", None, spacing), set_alpha_to_one=True)
    _use_our_alpha_bar(scheduler, schedule)
    scheduler.set_timesteps(10)
    seeds = sample_seeds(4, 3)
    theirs = _diffusers_run(scheduler, model, seeds, (2,), eta=eta)
    ours = ddim_sample(Parameterized(model, schedule), schedule, (3, 2), steps=10, eta=eta, spacing=spacing,
                       seeds=seeds)  # fmt: skip
    assert (ours.samples - theirs).abs().max() <= 1e-5
