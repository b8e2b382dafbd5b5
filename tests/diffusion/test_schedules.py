"""β schedules: analytic properties, closed forms, bad input, and parity with diffusers."""

from __future__ import annotations

import math

import pytest
import torch

from ddpm.diffusion.schedules import (
    SCHEDULES,
    NoiseSchedule,
    cosine_betas,
    linear_betas,
    make_schedule,
    sigmoid_betas,
)

STEP_COUNTS = (1, 10, 1000)


def _cosine_alpha_bar(i: int, num_steps: int, s: float = 0.008) -> float:
    """Nichol & Dhariwal eq. 17 at paper step t = i + 1, computed on Python floats."""

    def f(t: float) -> float:
        return math.cos((t / num_steps + s) / (1 + s) * math.pi / 2) ** 2

    return f(i + 1) / f(0)


def _sigmoid_alpha_bar(i: int, num_steps: int, start=-3.0, end=3.0, tau=1.0) -> float:
    """Jabri et al. 2022, Alg. 1 (γ(t)) at paper step t = i + 1, computed on Python floats."""

    def sig(x: float) -> float:
        return 1 / (1 + math.exp(-x))

    t = (i + 1) / num_steps
    return (sig(end / tau) - sig((t * (end - start) + start) / tau)) / (sig(end / tau) - sig(start / tau))


@pytest.mark.parametrize("name", sorted(SCHEDULES))
@pytest.mark.parametrize("num_steps", STEP_COUNTS)
def test_alpha_bar_strictly_decreasing_inside_unit_interval(name: str, num_steps: int) -> None:
    schedule = make_schedule(name, num_steps)
    assert schedule.num_steps == num_steps
    assert schedule.alpha_bar.shape == (num_steps,)
    assert (schedule.alpha_bar > 0).all() and (schedule.alpha_bar < 1).all()
    assert (schedule.alpha_bar.diff() < 0).all()
    assert (schedule.betas > 0).all() and (schedule.betas < 1).all()


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_every_array_is_float64_and_consistent(name: str) -> None:
    schedule = make_schedule(name, 50)
    for array in (
        schedule.betas,
        schedule.alphas,
        schedule.alpha_bar,
        schedule.alpha_bar_prev,
        schedule.posterior_variance,
        schedule.snr,
    ):
        assert array.dtype == torch.float64
        assert array.shape == (50,)
    # ᾱ_t = ∏_{s ≤ t} (1 − β_s), ᾱ_{t−1} with ᾱ_0 = 1, checked by a plain loop.
    product = 1.0
    for i, beta in enumerate(schedule.betas.tolist()):
        assert schedule.alpha_bar_prev[i].item() == pytest.approx(product, rel=1e-13)
        product *= 1 - beta
        assert schedule.alpha_bar[i].item() == pytest.approx(product, rel=1e-13)
        assert schedule.alphas[i].item() == 1 - beta


def test_linear_endpoints_exact_and_evenly_spaced() -> None:
    betas = make_schedule("linear", 1000).betas
    assert betas[0].item() == 1e-4
    assert betas[-1].item() == 0.02
    steps = betas.diff()
    torch.testing.assert_close(steps, torch.full_like(steps, (0.02 - 1e-4) / 999), rtol=0, atol=1e-15)


def test_linear_single_step_is_beta_start() -> None:
    assert linear_betas(1).tolist() == [1e-4]


@pytest.mark.parametrize("num_steps", STEP_COUNTS)
def test_cosine_matches_closed_form_where_not_clipped(num_steps: int) -> None:
    max_beta = 0.999
    schedule = NoiseSchedule(cosine_betas(num_steps, max_beta=max_beta))
    expected = torch.tensor([_cosine_alpha_bar(i, num_steps) for i in range(num_steps)], dtype=torch.float64)
    clipped = schedule.betas == max_beta
    first_clipped = int(clipped.nonzero()[0]) if clipped.any() else num_steps
    # Before the first clipped step ᾱ is exactly the formula; at T the formula gives 0 so β must clip.
    assert clipped[-1]
    torch.testing.assert_close(
        schedule.alpha_bar[:first_clipped], expected[:first_clipped], rtol=1e-12, atol=0
    )
    assert (schedule.betas <= max_beta).all()


@pytest.mark.parametrize("num_steps", STEP_COUNTS)
def test_sigmoid_matches_closed_form_where_not_clipped(num_steps: int) -> None:
    schedule = make_schedule("sigmoid", num_steps)
    expected = torch.tensor([_sigmoid_alpha_bar(i, num_steps) for i in range(num_steps)], dtype=torch.float64)
    torch.testing.assert_close(schedule.alpha_bar[:-1], expected[:-1], rtol=1e-10, atol=0)
    assert schedule.betas[-1].item() == 0.999  # ᾱ(1) = 0 in the formula, so the last β is clipped


def test_sigmoid_betas_increase_monotonically() -> None:
    betas = sigmoid_betas(1000)
    assert (betas.diff() >= 0).all()


@pytest.mark.parametrize("make_betas", [cosine_betas, sigmoid_betas], ids=["cosine", "sigmoid"])
def test_clipping_at_max_beta(make_betas) -> None:
    betas = make_betas(100, max_beta=0.3)
    assert betas.max().item() == 0.3
    assert (betas == 0.3).sum() >= 1
    unclipped = make_betas(100, max_beta=0.999)
    torch.testing.assert_close(betas, unclipped.clamp(max=0.3), rtol=0, atol=0)


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_snr_strictly_decreasing(name: str) -> None:
    schedule = make_schedule(name, 1000)
    torch.testing.assert_close(schedule.snr, schedule.alpha_bar / (1 - schedule.alpha_bar))
    assert (schedule.snr.diff() < 0).all()
    assert (schedule.snr > 0).all()


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_posterior_variance_formula(name: str) -> None:
    schedule = make_schedule(name, 200)
    betas = schedule.betas.tolist()
    alpha_bar = 1.0
    for i, beta in enumerate(betas):
        alpha_bar_prev, alpha_bar = alpha_bar, alpha_bar * (1 - beta)
        expected = (1 - alpha_bar_prev) / (1 - alpha_bar) * beta  # eq. 7
        assert schedule.posterior_variance[i].item() == pytest.approx(expected, rel=1e-12, abs=0)
    assert schedule.posterior_variance[0].item() == 0.0  # q(x_0 | x_1, x_0) is a point mass
    assert (schedule.posterior_variance[1:] < schedule.betas[1:]).all()  # β̃_t < β_t for t > 1


def test_at_broadcasts_per_sample_and_takes_data_dtype() -> None:
    schedule = make_schedule("linear", 10)
    like = torch.zeros(3, 2, 4, 4, dtype=torch.float32)
    out = schedule.at(schedule.alpha_bar, torch.tensor([0, 9, 4]), like)
    assert out.shape == (3, 1, 1, 1)
    assert out.dtype == torch.float32
    expected = schedule.alpha_bar[[0, 9, 4]].float()
    torch.testing.assert_close(out.flatten(), expected)


@pytest.mark.parametrize("num_steps", [0, -3])
def test_num_steps_below_one_rejected(num_steps: int) -> None:
    with pytest.raises(ValueError, match=rf"num_steps={num_steps} is invalid; T must be an integer ≥ 1"):
        make_schedule("linear", num_steps)


@pytest.mark.parametrize("num_steps", [2.5, 10.0, "10", True])
@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_num_steps_not_integer_rejected(name: str, num_steps: object) -> None:
    with pytest.raises(ValueError, match=r"num_steps=.* is invalid; T must be an integer"):
        make_schedule(name, num_steps)


@pytest.mark.parametrize(
    "betas, bad",
    [
        ([0.1, 1.0], r"beta\[1\]=1\.0"),
        ([0.0, 0.1], r"beta\[0\]=0\.0"),
        ([0.1, 0.2, -0.1], r"beta\[2\]=-0\.1"),
        ([0.1, float("nan")], r"beta\[1\]=nan"),
        ([0.1, float("inf")], r"beta\[1\]=inf"),
    ],
)
def test_noise_schedule_rejects_beta_outside_unit_interval(betas: list[float], bad: str) -> None:
    with pytest.raises(ValueError, match=bad + r" is outside \(0, 1\)"):
        NoiseSchedule(betas=torch.tensor(betas, dtype=torch.float64))


@pytest.mark.parametrize("betas", [torch.zeros(0), torch.full((2, 3), 0.1)], ids=["empty", "2-D"])
def test_noise_schedule_rejects_non_vector(betas: torch.Tensor) -> None:
    with pytest.raises(ValueError, match=r"betas must be a non-empty 1-D tensor, got shape"):
        NoiseSchedule(betas=betas)


def test_noise_schedule_from_list_is_float64_cpu() -> None:
    schedule = NoiseSchedule(betas=[0.1, 0.2])
    assert schedule.betas.dtype == torch.float64
    torch.testing.assert_close(schedule.alpha_bar, torch.tensor([0.9, 0.72], dtype=torch.float64))


def test_unknown_schedule_name_rejected() -> None:
    with pytest.raises(ValueError, match=r"unknown schedule 'quadratic'; allowed: linear, cosine, sigmoid"):
        make_schedule("quadratic", 10)


@pytest.mark.parametrize("kwargs", [{"beta_start": 0.0}, {"beta_end": 1.0}, {"beta_start": -1e-4}])
def test_linear_rejects_beta_outside_unit_interval(kwargs: dict[str, float]) -> None:
    name, value = next(iter(kwargs.items()))
    with pytest.raises(ValueError, match=rf"{name}={value!r} is outside \(0, 1\)"):
        make_schedule("linear", 10, **kwargs)


@pytest.mark.parametrize("max_beta", [0.0, 1.0, 1.5])
def test_cosine_rejects_max_beta_outside_unit_interval(max_beta: float) -> None:
    with pytest.raises(ValueError, match=rf"max_beta={max_beta!r} is outside \(0, 1\)"):
        make_schedule("cosine", 10, max_beta=max_beta)


@pytest.mark.parametrize("kwargs", [{"start": 3.0, "end": 3.0}, {"start": 1.0, "end": -1.0}, {"tau": 0.0}])
def test_sigmoid_rejects_bad_shape_parameters(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=r"sigmoid schedule needs end > start and tau > 0, got start="):
        make_schedule("sigmoid", 10, **kwargs)


@pytest.mark.parametrize(
    "name, diffusers_name",
    [("linear", "linear"), ("cosine", "squaredcos_cap_v2")],
)
@pytest.mark.parametrize("num_steps", [10, 1000])
def test_parity_with_diffusers_ddpm_scheduler(name: str, diffusers_name: str, num_steps: int) -> None:
    diffusers = pytest.importorskip("diffusers")
    reference = diffusers.DDPMScheduler(num_train_timesteps=num_steps, beta_schedule=diffusers_name)
    schedule = make_schedule(name, num_steps)
    # diffusers stores float32 and takes the cumulative product in float32: ~3e-7 drift over 1000 steps.
    torch.testing.assert_close(schedule.betas, reference.betas.double(), rtol=0, atol=1e-7)
    torch.testing.assert_close(schedule.alpha_bar, reference.alphas_cumprod.double(), rtol=0, atol=1e-6)
