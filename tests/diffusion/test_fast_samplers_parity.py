"""DPM-Solver++(2M) (ODE and SDE), Euler, Heun, Euler ancestral: whole runs against diffusers' schedulers
given the same x_T, per-sample generators and model, in float32, to 1e-4 relative.
"""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import (
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
)
from diffusers.utils.torch_utils import randn_tensor

from ddpm.diffusion.prediction import Parameterized
from ddpm.diffusion.samplers import sample_seeds, timesteps
from ddpm.diffusion.samplers.dpm_solver import dpm_solver_pp_sample, dpm_solver_pp_sde_sample
from ddpm.diffusion.samplers.karras import euler_ancestral_sample, euler_sample, heun_sample
from ddpm.diffusion.samplers.sigmas import sampling_sigmas
from ddpm.diffusion.schedules import make_schedule

T = 1000
PREDICTIONS = {"eps": "epsilon", "x0": "sample", "v": "v_prediction"}
# diffusers turns our float64 ᾱ tensor into NumPy with np.array(tensor), which NumPy 2 warns about.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@pytest.fixture(scope="module")
def schedule():
    return make_schedule("linear", T)


def toy_model(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A fixed non-trivial 'network' of x_t and t, elementwise."""
    return 0.1 * x_t + 0.3 * torch.sin(x_t) + 0.01 * t.to(x_t.dtype).reshape(-1, *[1] * (x_t.ndim - 1)) / 1000


def time_free_model(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Independent of t, for runs where diffusers rounds the timestep and we do not."""
    return 0.1 * x_t + 0.3 * torch.sin(x_t)


def _start(seeds, shape) -> torch.Tensor:
    return randn_tensor((len(seeds), *shape), generator=[torch.Generator().manual_seed(s) for s in seeds])


def _assert_close(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    assert ((ours - theirs).abs() / theirs.abs().clamp(min=1)).max() <= 1e-4


def _scheduler(cls, schedule, parameterization: str, **config):
    scheduler = cls(num_train_timesteps=T, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
                    prediction_type=PREDICTIONS[parameterization], **config)  # fmt: skip
    torch.testing.assert_close(scheduler.alphas_cumprod.double(), schedule.alpha_bar, rtol=1e-4, atol=1e-7)
    scheduler.alphas_cumprod = schedule.alpha_bar.clone()  # diffusers' float32 ᾱ, vs ours in float64
    return scheduler


def _dpm_solver_scheduler(schedule, parameterization: str, spacing: str, algorithm: str, steps: int):
    """diffusers' DPM-Solver++(2M) set to our grid, and the model to run it with: with karras σ
    diffusers calls the net at round(t(σ)) and we at t(σ), so that model ignores t."""
    scheduler = _scheduler(
        DPMSolverMultistepScheduler, schedule, parameterization, algorithm_type=algorithm, solver_order=2,
        lower_order_final=True, final_sigmas_type="zero", use_karras_sigmas=spacing == "karras",
    )  # fmt: skip
    if spacing == "karras":
        scheduler.set_timesteps(steps)
        return scheduler, time_free_model
    scheduler.set_timesteps(timesteps=timesteps(T, steps, spacing).tolist())
    return scheduler, toy_model


@pytest.mark.parametrize("parameterization", ["eps", "x0", "v"])
@pytest.mark.parametrize("spacing", ["uniform", "trailing", "quadratic", "karras"])
def test_dpm_solver_run_matches_diffusers(schedule, parameterization, spacing):
    steps = 12
    scheduler, model = _dpm_solver_scheduler(schedule, parameterization, spacing, "dpmsolver++", steps)
    seeds = sample_seeds(2, 3)
    x = _start(seeds, (2, 4))
    theirs = []
    for t in scheduler.timesteps:
        theirs.append(x)
        x = scheduler.step(model(x, t.expand(len(seeds))), t, x).prev_sample
    ours = []
    result = dpm_solver_pp_sample(
        Parameterized(model, schedule, parameterization), schedule, (3, 2, 4), steps=steps, spacing=spacing,
        seeds=seeds, callback=lambda i, t, x_t, x0: ours.append(x_t),
    )  # fmt: skip
    for mine, expected in zip(ours, theirs, strict=True):
        _assert_close(mine, expected)
    _assert_close(result.samples, x)


@pytest.mark.parametrize("parameterization", ["eps", "x0", "v"])
@pytest.mark.parametrize("spacing", ["trailing", "karras"])
def test_dpm_solver_sde_run_matches_diffusers_with_per_sample_generators(schedule, parameterization, spacing):
    steps = 12
    scheduler, model = _dpm_solver_scheduler(schedule, parameterization, spacing, "sde-dpmsolver++", steps)
    seeds = sample_seeds(12, 3)
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    x = randn_tensor((3, 2, 4), generator=generators)  # the generators then draw each step's noise
    for t in scheduler.timesteps:
        x = scheduler.step(model(x, t.expand(len(seeds))), t, x, generator=generators).prev_sample
    ours = dpm_solver_pp_sde_sample(Parameterized(model, schedule, parameterization), schedule, (3, 2, 4),
                                    steps=steps, spacing=spacing, seeds=seeds)  # fmt: skip
    _assert_close(ours.samples, x)


def test_dpm_solver_clipping_matches_diffusers_thresholding_at_one(schedule):
    # Dynamic thresholding with sample_max_value = 1 clamps its percentile s to 1: plain clipping to [−1, 1].
    scheduler = _scheduler(
        DPMSolverMultistepScheduler, schedule, "eps", thresholding=True, sample_max_value=1.0
    )
    scheduler.set_timesteps(timesteps=timesteps(T, 8, "trailing").tolist())
    seeds = sample_seeds(3, 2)
    x = _start(seeds, (2, 3))  # diffusers' thresholding needs (B, C, …)
    model = lambda x_t, t: 2.0 * x_t  # noqa: E731 - x̂₀ far outside [−1, 1]
    for t in scheduler.timesteps:
        x = scheduler.step(model(x, t), t, x).prev_sample
    ours = dpm_solver_pp_sample(
        Parameterized(model, schedule, clip_x0=1.0), schedule, (2, 2, 3), steps=8, spacing="trailing",
        seeds=seeds,
    )  # fmt: skip
    _assert_close(ours.samples, x)
    assert x.abs().max() <= 1.0


def _karras_run(scheduler, model, x, **step_kwargs) -> torch.Tensor:
    """diffusers' Euler/Heun pipeline loop from the σ-space state x."""
    for t in scheduler.timesteps:
        model_input = scheduler.scale_model_input(x, t)
        x = scheduler.step(model(model_input, t.expand(x.shape[0])), t, x, **step_kwargs).prev_sample
    return x


@pytest.mark.parametrize("parameterization", ["eps", "x0", "v"])
@pytest.mark.parametrize(("cls", "sampler"), [(EulerDiscreteScheduler, euler_sample),
                                              (HeunDiscreteScheduler, heun_sample)])  # fmt: skip
@pytest.mark.parametrize("spacing", ["karras", "trailing"])
def test_euler_and_heun_runs_match_diffusers(schedule, parameterization, cls, sampler, spacing):
    scheduler = _scheduler(cls, schedule, parameterization, use_karras_sigmas=spacing == "karras")
    steps = 10
    if spacing == "karras":
        scheduler.set_timesteps(steps)  # fractional timesteps t(σ) on both sides
    else:
        scheduler.set_timesteps(timesteps=timesteps(T, steps, spacing).tolist())
    seeds = sample_seeds(5, 3)
    x_T = _start(seeds, (2, 4))
    sigma_0 = sampling_sigmas(schedule, steps, spacing)[0].sigma
    # Both start from the same σ-space state; diffusers would start from σ_0 n (see karras.py).
    theirs = _karras_run(scheduler, toy_model, x_T * math.sqrt(1 + sigma_0**2))
    ours = sampler(Parameterized(toy_model, schedule, parameterization), schedule, (3, 2, 4), steps=steps,
                   spacing=spacing, seeds=seeds)  # fmt: skip
    _assert_close(ours.samples, theirs)


def test_heun_clipping_matches_diffusers(schedule):
    scheduler = _scheduler(HeunDiscreteScheduler, schedule, "eps", use_karras_sigmas=True, clip_sample=True,
                           clip_sample_range=1.0)  # fmt: skip
    scheduler.set_timesteps(8)
    seeds = sample_seeds(6, 2)
    sigma_0 = sampling_sigmas(schedule, 8, "karras")[0].sigma
    model = lambda x_t, t: -x_t  # noqa: E731 - x̂₀ = x_t (1 + √(1−ᾱ))/√ᾱ, far outside [−1, 1]
    theirs = _karras_run(scheduler, model, _start(seeds, (6,)) * math.sqrt(1 + sigma_0**2))
    ours = heun_sample(Parameterized(model, schedule, clip_x0=1.0), schedule, (2, 6), steps=8, seeds=seeds)
    _assert_close(ours.samples, theirs)


def test_euler_ancestral_run_matches_diffusers_with_per_sample_generators(schedule):
    # diffusers' EulerAncestral has neither karras sigmas nor custom timesteps; its trailing grid is ours.
    scheduler = _scheduler(EulerAncestralDiscreteScheduler, schedule, "eps", timestep_spacing="trailing")
    scheduler.set_timesteps(10)
    assert scheduler.timesteps.tolist() == timesteps(T, 10, "trailing").tolist()
    seeds = sample_seeds(9, 3)
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    x_T = randn_tensor((3, 2, 4), generator=generators)  # the generators then draw each step's noise
    sigma_0 = sampling_sigmas(schedule, 10, "trailing")[0].sigma
    theirs = _karras_run(scheduler, toy_model, x_T * math.sqrt(1 + sigma_0**2), generator=generators)
    ours = euler_ancestral_sample(
        Parameterized(toy_model, schedule), schedule, (3, 2, 4), steps=10, spacing="trailing", seeds=seeds
    )
    _assert_close(ours.samples, theirs)
