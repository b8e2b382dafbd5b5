"""DPM-Solver++(2M) (ODE and SDE), Euler, Heun, Euler ancestral: exactness on Gaussian data, NFE, parity.

For data N(μ, s²) the denoiser is known in closed form at every σ, and so is the probability-flow
ODE's solution: in σ-space x(σ) − μ ∝ √(s² + σ²). Every sampler here, and DDIM, ends with the same
step D(x; σ_min) from σ_min = σ_0 to 0, so the reference is the exact flow from σ_{T−1} to σ_0
followed by that step; all of them converge to it as steps grow.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from diffusers import (
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
)
from diffusers.utils.torch_utils import randn_tensor

from ddpm.diffusion.samplers import ddim_sample, per_sample_noise, sample_seeds, timesteps
from ddpm.diffusion.samplers.dpm_solver import (
    dpm_solver_pp_sample,
    dpm_solver_pp_sde_sample,
    dpm_solver_pp_update,
)
from ddpm.diffusion.samplers.karras import euler_ancestral_sample, euler_sample, heun_sample
from ddpm.diffusion.samplers.sigmas import (
    karras_sigmas,
    sampling_sigmas,
    schedule_sigmas,
    sigma_to_t,
    t_to_sigma,
)
from ddpm.diffusion.schedules import make_schedule

T = 1000
MEAN, STD = 0.5, 0.3
PREDICTIONS = {"eps": "epsilon", "x0": "sample", "v": "v_prediction"}
DETERMINISTIC = {"dpm++2m": dpm_solver_pp_sample, "euler": euler_sample, "heun": heun_sample}
STOCHASTIC = {"euler_ancestral": euler_ancestral_sample, "dpm++2m_sde": dpm_solver_pp_sde_sample}
ALL_SAMPLERS = {**DETERMINISTIC, **STOCHASTIC}
# diffusers turns our float64 ᾱ tensor into NumPy with np.array(tensor), which NumPy 2 warns about.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


class ContinuousGaussianDenoiser:
    """Exact denoiser of N(mean, std² I) at integer or fractional t, with σ(t) = ``t_to_sigma`` (log σ
    linear between the schedule's levels, the samplers' own map). Counts its calls."""

    def __init__(self, schedule, mean: float, std: float, parameterization: str = "eps") -> None:
        self.log_sigmas = np.log(schedule_sigmas(schedule).numpy())
        self.mean, self.std, self.parameterization = mean, std, parameterization
        self.calls = 0

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        t_np = t.double().cpu().numpy()
        sigma = torch.from_numpy(np.exp(np.interp(t_np, np.arange(len(self.log_sigmas)), self.log_sigmas)))
        alpha_bar = (1 / (1 + sigma**2)).reshape(-1, *[1] * (x_t.ndim - 1))  # (B, 1, …), float64
        x = x_t.double()
        gain = alpha_bar.sqrt() * self.std**2 / (alpha_bar * self.std**2 + 1 - alpha_bar)
        x0 = self.mean + gain * (x - alpha_bar.sqrt() * self.mean)  # E[x₀ | x_t]
        eps = (x - alpha_bar.sqrt() * x0) / (1 - alpha_bar).sqrt()
        v = alpha_bar.sqrt() * eps - (1 - alpha_bar).sqrt() * x0
        return {"eps": eps, "x0": x0, "v": v}[self.parameterization].to(x_t.dtype)


def exact_solution(schedule, x_T: torch.Tensor, mean: float = MEAN, std: float = STD) -> torch.Tensor:
    """The PF-ODE flow of x_T (VP state at t = T−1) down to σ_0, then the final step x̂₀ = D(x; σ_0)."""
    sigmas = schedule_sigmas(schedule)
    sigma_min, sigma_max = float(sigmas[0]), float(sigmas[-1])
    x = x_T.double() * math.sqrt(1 + sigma_max**2)  # σ-space
    x_min = mean + (x - mean) * math.sqrt(std**2 + sigma_min**2) / math.sqrt(std**2 + sigma_max**2)
    return mean + (x_min - mean) * std**2 / (std**2 + sigma_min**2)


@pytest.fixture(scope="module")
def schedule():
    return make_schedule("linear", T)


def _x_T(batch: int = 64, dim: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _error(sampler, schedule, x_T, steps: int, parameterization: str = "eps", **kwargs) -> tuple[float, int]:
    model = ContinuousGaussianDenoiser(schedule, MEAN, STD, parameterization)
    result = sampler(
        model, schedule, x_T, parameterization=parameterization, steps=steps, dtype=torch.float64, **kwargs
    )
    assert result.nfe == model.calls
    return (result.samples - exact_solution(schedule, x_T)).abs().max().item(), result.nfe


# --- Exactness and convergence on Gaussian data -------------------------------------------------------


@pytest.mark.parametrize("name", DETERMINISTIC)
@pytest.mark.parametrize("parameterization", ["eps", "x0", "v"])
def test_deterministic_samplers_converge_to_the_ode_solution(schedule, name, parameterization):
    x_T = _x_T()
    errors = [_error(DETERMINISTIC[name], schedule, x_T, s, parameterization)[0] for s in (10, 40, 160)]
    assert errors[0] > errors[1] > errors[2]
    order = 1 if name == "euler" else 2  # ×4 steps: error ÷4 (first order) or ÷16 (second order)
    assert errors[2] < errors[1] / 4 ** (order - 0.5)
    assert errors[2] < (2e-2 if name == "euler" else 1e-3)


@pytest.mark.parametrize("name", ALL_SAMPLERS)
def test_samples_have_the_data_distribution_as_steps_grow(schedule, name):
    # 8192 values of N(0.5, 0.3²): standard errors 0.0033 (mean) and 0.0023 (std).
    x_T = per_sample_noise(sample_seeds(1, 512), (16,), dtype=torch.float64)
    model = ContinuousGaussianDenoiser(schedule, MEAN, STD)

    def moments_error(steps: int) -> float:
        samples = ALL_SAMPLERS[name](model, schedule, x_T, steps=steps, seeds=sample_seeds(1, 512),
                                     dtype=torch.float64).samples  # fmt: skip
        return max(abs(samples.mean().item() - MEAN), abs(samples.std().item() - STD))

    many_steps = 100 if name in ("dpm++2m", "heun") else 400  # second vs first order
    few, many = moments_error(4), moments_error(many_steps)
    assert many < 0.012
    assert few > 10 * many


def test_dpm_solver_and_heun_reach_an_error_with_fewer_evaluations_than_ddim(schedule):
    x_T = _x_T(seed=1)
    tolerance = 2e-2

    def nfe_to_reach(sampler, step_counts, **kwargs) -> int:
        for steps in step_counts:
            error, nfe = _error(sampler, schedule, x_T, steps, **kwargs)
            if error <= tolerance:
                return nfe
        return 10**9

    # DDIM gets its better spacing at each budget; both start at t = T − 1 or T − T/S with this x_T.
    ddim = min(nfe_to_reach(ddim_sample, [25, 50, 100, 200, 400], spacing=spacing)
               for spacing in ("uniform", "trailing"))  # fmt: skip
    dpm = nfe_to_reach(dpm_solver_pp_sample, [10, 25, 50, 100, 200])
    heun = nfe_to_reach(heun_sample, [13, 25, 50, 100])  # NFE 25, 49, 99, 199
    assert ddim >= 200
    assert dpm <= ddim / 4
    assert heun <= ddim / 2


def test_dpm_solver_first_steps_are_ddim(schedule):
    """With one step to a positive σ the update is first order, which is DDIM's (Lu et al. 2022b eq. 11)."""
    x_T = _x_T()
    model = ContinuousGaussianDenoiser(schedule, MEAN, STD)
    steps = timesteps(T, 2, "trailing")  # [999, 499]: one step 999 → 499, then to σ = 0
    levels = sampling_sigmas(schedule, 2, "trailing")
    ours = dpm_solver_pp_sample(model, schedule, x_T, steps=2, spacing="trailing", dtype=torch.float64)
    ddim = ddim_sample(model, schedule, x_T, steps=2, spacing="trailing", dtype=torch.float64)
    assert [level.t for level in levels] == steps.tolist()
    torch.testing.assert_close(ours.samples, ddim.samples, rtol=1e-12, atol=1e-12)


# --- NFE, callbacks, trajectories, seeding ---------------------------------------------------------------


@pytest.mark.parametrize(("name", "expected_nfe"), [("dpm++2m", 7), ("euler", 7), ("heun", 13),
                                                    ("euler_ancestral", 7), ("dpm++2m_sde", 7)])  # fmt: skip
def test_nfe_callbacks_and_trajectories(schedule, name, expected_nfe):
    model = ContinuousGaussianDenoiser(schedule, MEAN, STD)
    seen = []
    result = ALL_SAMPLERS[name](model, schedule, (2, 3), steps=7,
                                callback=lambda i, t, x_t, x0: seen.append((i, t, x_t.shape, x0.shape)),
                                trajectory_steps="all")  # fmt: skip
    assert result.nfe == expected_nfe == model.calls
    levels = sampling_sigmas(schedule, 7, "karras")
    assert [(i, t) for i, t, _, _ in seen] == [(i, round(level.t)) for i, level in enumerate(levels)]
    assert seen[0][1] == T - 1 and seen[-1][1] == 0
    assert [step.t for step in result.trajectory] == [t for _, t, _, _ in seen] + [-1]
    assert torch.equal(result.trajectory[-1].x_t, result.samples)
    torch.testing.assert_close(result.trajectory[0].x_t, per_sample_noise(sample_seeds(0, 2), (3,)))


def test_heun_with_one_step_is_one_euler_step(schedule):
    model = ContinuousGaussianDenoiser(schedule, MEAN, STD)
    heun = heun_sample(model, schedule, (2, 3), steps=1)
    euler = euler_sample(model, schedule, (2, 3), steps=1)
    assert heun.nfe == euler.nfe == 1
    assert torch.equal(heun.samples, euler.samples)


@pytest.mark.parametrize("name", STOCHASTIC)
def test_stochastic_image_i_does_not_depend_on_the_batch(schedule, name):
    model, sampler = ContinuousGaussianDenoiser(schedule, MEAN, STD), STOCHASTIC[name]
    seeds = sample_seeds(7, 3)
    batch = sampler(model, schedule, (3, 5), steps=6, seeds=seeds).samples
    alone = torch.cat([sampler(model, schedule, (1, 5), steps=6, seeds=[s]).samples for s in seeds])
    torch.testing.assert_close(batch, alone, rtol=0, atol=1e-6)
    again = sampler(model, schedule, (3, 5), steps=6, seeds=sample_seeds(8, 3)).samples
    assert not torch.allclose(batch, again)


def test_dpm_solver_sde_with_eta_zero_is_the_ode_solver(schedule):
    model = ContinuousGaussianDenoiser(schedule, MEAN, STD)
    ode = dpm_solver_pp_sample(model, schedule, (4, 3), steps=9)
    same = dpm_solver_pp_sde_sample(model, schedule, (4, 3), steps=9, eta=0.0)
    assert torch.equal(same.samples, ode.samples)
    sde = dpm_solver_pp_sde_sample(model, schedule, (4, 3), steps=9)
    assert not torch.allclose(sde.samples, ode.samples)


# --- The σ grid ----------------------------------------------------------------------------------------


def test_sigma_and_timestep_maps_are_inverse_and_exact_on_the_grid(schedule):
    sigmas = schedule_sigmas(schedule)
    for t in (0, 1, 500, 998, 999):
        assert sigma_to_t(float(sigmas[t]), schedule) == t
        assert t_to_sigma(float(t), schedule) == pytest.approx(float(sigmas[t]), rel=1e-12)
    for t in (0.25, 10.5, 998.75):
        assert sigma_to_t(t_to_sigma(t, schedule), schedule) == pytest.approx(t, abs=1e-9)
    assert sigma_to_t(1e-9, schedule) == 0 and sigma_to_t(1e9, schedule) == T - 1


def test_karras_grid_matches_diffusers(schedule):
    scheduler = EulerDiscreteScheduler(num_train_timesteps=T, use_karras_sigmas=True)
    scheduler.alphas_cumprod = schedule.alpha_bar.clone()
    scheduler.set_timesteps(12)
    levels = sampling_sigmas(schedule, 12, "karras")
    sigmas = torch.tensor([level.sigma for level in levels], dtype=torch.float64)
    model_times = torch.tensor([level.t for level in levels], dtype=torch.float64)
    torch.testing.assert_close(sigmas, scheduler.sigmas[:-1].double(), rtol=1e-6, atol=0)
    torch.testing.assert_close(model_times, scheduler.timesteps.double(), rtol=0, atol=1e-3)
    assert levels[0].t == T - 1 and levels[-1].t == 0
    grid = karras_sigmas(0.002, 80.0, 18)
    assert grid[0] == 80.0 and grid[-1] == 0.002 and bool((grid[:-1] > grid[1:]).all())


# --- Parity with diffusers ---------------------------------------------------------------------------------


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
        model, schedule, (3, 2, 4), parameterization=parameterization, steps=steps, spacing=spacing,
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
    ours = dpm_solver_pp_sde_sample(model, schedule, (3, 2, 4), parameterization=parameterization,
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
        model, schedule, (2, 2, 3), steps=8, spacing="trailing", clip_x0=1.0, seeds=seeds
    )
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
    ours = sampler(toy_model, schedule, (3, 2, 4), parameterization=parameterization, steps=steps,
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
    ours = heun_sample(model, schedule, (2, 6), steps=8, clip_x0=1.0, seeds=seeds)
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
    ours = euler_ancestral_sample(toy_model, schedule, (3, 2, 4), steps=10, spacing="trailing", seeds=seeds)
    _assert_close(ours.samples, theirs)


# --- Bad input ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_SAMPLERS)
def test_unknown_spacing_is_refused(schedule, name):
    with pytest.raises(
        ValueError, match=r"unknown spacing 'linspace'; allowed: uniform, trailing, quadratic, karras"
    ):
        ALL_SAMPLERS[name](toy_model, schedule, (1, 2), steps=5, spacing="linspace")


@pytest.mark.parametrize("steps", [0, 2.5, True])
def test_bad_karras_step_count_is_refused(schedule, steps):
    with pytest.raises(ValueError, match=r"steps=.* is invalid; it must be an integer ≥ 1"):
        euler_sample(toy_model, schedule, (1, 2), steps=steps)


def test_bad_karras_grids_are_refused():
    with pytest.raises(ValueError, match=r"sigma_min=1.0, sigma_max=0.5 are invalid; need 0 < σ_min < σ_max"):
        karras_sigmas(1.0, 0.5, 4)
    with pytest.raises(ValueError, match=r"karras spacing needs a schedule with T ≥ 2 noise levels, got T=1"):
        sampling_sigmas(make_schedule("linear", 1), 1, "karras")


@pytest.mark.parametrize("eta", [-0.5, 1.5])
def test_bad_dpm_solver_eta_is_refused(schedule, eta):
    with pytest.raises(ValueError, match=rf"eta={eta} is invalid; DPM-Solver\+\+ needs 0 ≤ eta ≤ 1"):
        dpm_solver_pp_sample(toy_model, schedule, (1, 2), steps=3, eta=eta)
    with pytest.raises(ValueError, match=rf"eta={eta} is invalid"):
        dpm_solver_pp_update(torch.zeros(1, 2), torch.zeros(1, 2), 2.0, 1.0, eta=eta)


def test_second_order_update_without_the_previous_sigma_is_refused():
    x = torch.zeros(1, 2)
    with pytest.raises(ValueError, match=r"x0_prev given without sigma_prev"):
        dpm_solver_pp_update(x, x, 2.0, 1.0, x0_prev=x)


@pytest.mark.parametrize("name", ALL_SAMPLERS)
def test_bad_parameterization_and_clip_are_refused(schedule, name):
    with pytest.raises(ValueError, match=r"unknown parameterization 'score'"):
        ALL_SAMPLERS[name](toy_model, schedule, (1, 2), steps=3, parameterization="score")
    with pytest.raises(ValueError, match=r"clip_x0=0 is invalid"):
        ALL_SAMPLERS[name](toy_model, schedule, (1, 2), steps=3, clip_x0=0)
