"""DPM-Solver++(2M) (ODE and SDE), Euler, Heun, Euler ancestral: exactness on Gaussian data, NFE, the σ
grid (parity of whole runs with diffusers: test_fast_samplers_parity.py).

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
from diffusers import EulerDiscreteScheduler

from ddpm.diffusion.prediction import Parameterized
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
        Parameterized(model, schedule, parameterization), schedule, x_T, steps=steps, dtype=torch.float64,
        **kwargs,
    )  # fmt: skip
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
    model = Parameterized(ContinuousGaussianDenoiser(schedule, MEAN, STD), schedule)

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
    model = Parameterized(ContinuousGaussianDenoiser(schedule, MEAN, STD), schedule)
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
    result = ALL_SAMPLERS[name](Parameterized(model, schedule), schedule, (2, 3), steps=7,
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
    model = Parameterized(ContinuousGaussianDenoiser(schedule, MEAN, STD), schedule)
    heun = heun_sample(model, schedule, (2, 3), steps=1)
    euler = euler_sample(model, schedule, (2, 3), steps=1)
    assert heun.nfe == euler.nfe == 1
    assert torch.equal(heun.samples, euler.samples)


@pytest.mark.parametrize("name", STOCHASTIC)
def test_stochastic_image_i_does_not_depend_on_the_batch(schedule, name):
    model, sampler = (
        Parameterized(ContinuousGaussianDenoiser(schedule, MEAN, STD), schedule),
        STOCHASTIC[name],
    )
    seeds = sample_seeds(7, 3)
    batch = sampler(model, schedule, (3, 5), steps=6, seeds=seeds).samples
    alone = torch.cat([sampler(model, schedule, (1, 5), steps=6, seeds=[s]).samples for s in seeds])
    torch.testing.assert_close(batch, alone, rtol=0, atol=1e-6)
    again = sampler(model, schedule, (3, 5), steps=6, seeds=sample_seeds(8, 3)).samples
    assert not torch.allclose(batch, again)


def test_dpm_solver_sde_with_eta_zero_is_the_ode_solver(schedule):
    model = Parameterized(ContinuousGaussianDenoiser(schedule, MEAN, STD), schedule)
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


# --- Bad input ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_SAMPLERS)
def test_unknown_spacing_is_refused(schedule, name, toy_denoiser):
    with pytest.raises(
        ValueError, match=r"unknown spacing 'linspace'; allowed: uniform, trailing, quadratic, karras"
    ):
        ALL_SAMPLERS[name](
            Parameterized(toy_denoiser, schedule), schedule, (1, 2), steps=5, spacing="linspace"
        )


@pytest.mark.parametrize("steps", [0, 2.5, True])
def test_bad_karras_step_count_is_refused(schedule, steps, toy_denoiser):
    with pytest.raises(ValueError, match=r"steps=.* is invalid; it must be an integer ≥ 1"):
        euler_sample(Parameterized(toy_denoiser, schedule), schedule, (1, 2), steps=steps)


def test_bad_karras_grids_are_refused():
    with pytest.raises(ValueError, match=r"sigma_min=1.0, sigma_max=0.5 are invalid; need 0 < σ_min < σ_max"):
        karras_sigmas(1.0, 0.5, 4)
    with pytest.raises(ValueError, match=r"karras spacing needs a schedule with T ≥ 2 noise levels, got T=1"):
        sampling_sigmas(make_schedule("linear", 1), 1, "karras")


@pytest.mark.parametrize("eta", [-0.5, 1.5])
def test_bad_dpm_solver_eta_is_refused(schedule, eta, toy_denoiser):
    with pytest.raises(ValueError, match=rf"eta={eta} is invalid; DPM-Solver\+\+ needs 0 ≤ eta ≤ 1"):
        dpm_solver_pp_sample(Parameterized(toy_denoiser, schedule), schedule, (1, 2), steps=3, eta=eta)
    with pytest.raises(ValueError, match=rf"eta={eta} is invalid"):
        dpm_solver_pp_update(torch.zeros(1, 2), torch.zeros(1, 2), 2.0, 1.0, eta=eta)


def test_second_order_update_without_the_previous_sigma_is_refused():
    x = torch.zeros(1, 2)
    with pytest.raises(ValueError, match=r"x0_prev given without sigma_prev"):
        dpm_solver_pp_update(x, x, 2.0, 1.0, x0_prev=x)
