"""The Algorithm 1 objective: oracle zero, targets, min-SNR-γ weights, RNG discipline, bad input."""

from __future__ import annotations

import math

import pytest
import torch

from ddpm.diffusion.losses import DiffusionLoss, min_snr_weights
from ddpm.diffusion.process import PARAMETERIZATIONS, eps_from_x0, q_sample, training_target
from ddpm.diffusion.schedules import make_schedule

F64 = torch.float64


@pytest.fixture(scope="module")
def schedule():
    return make_schedule("cosine", 1000)


def _oracle(schedule, x0, parameterization):
    """A perfect denoiser for known data: recovers ε from (x_t, t) alone, then outputs the target."""

    def model(x_t, t):
        alpha_bar = schedule.at(schedule.alpha_bar, t, x_t)
        eps = eps_from_x0(x_t, x0, alpha_bar)
        return training_target(x0, eps, alpha_bar, parameterization)

    return model


def _zero_model(x_t, t):
    return torch.zeros_like(x_t)


@pytest.mark.parametrize("parameterization", PARAMETERIZATIONS)
@pytest.mark.parametrize("min_snr_gamma", [None, 5.0])
def test_oracle_model_has_zero_loss(schedule, parameterization: str, min_snr_gamma) -> None:
    generator = torch.Generator().manual_seed(0)
    x0 = torch.randn(16, 2, 4, 4, generator=generator, dtype=F64)
    loss_fn = DiffusionLoss(schedule, parameterization, min_snr_gamma)
    # Drawn t and ε: the oracle only sees x_t and t, so a wrong x_t or a shifted t shows up here.
    drawn = loss_fn(_oracle(schedule, x0, parameterization), x0, generator=generator)
    assert drawn.shape == (16,)
    torch.testing.assert_close(drawn, torch.zeros(16, dtype=F64), rtol=0, atol=1e-16)
    t = torch.tensor([0, 999] * 8)
    noise = torch.randn(x0.shape, generator=generator, dtype=F64)
    given = loss_fn(_oracle(schedule, x0, parameterization), x0, t=t, noise=noise)
    torch.testing.assert_close(given, torch.zeros(16, dtype=F64), rtol=0, atol=1e-16)


@pytest.mark.parametrize("shape", [(7, 2), (5, 3, 8, 8), (4, 1, 2, 3, 5)])
def test_one_value_per_sample(schedule, shape: tuple[int, ...]) -> None:
    x0 = torch.randn(shape)
    loss = DiffusionLoss(schedule)(_zero_model, x0, generator=torch.Generator().manual_seed(0))
    assert loss.shape == (shape[0],)
    assert loss.dtype == torch.float32


def test_model_receives_x_t_t_and_condition(schedule) -> None:
    seen = {}

    def model(x_t, t, **cond):
        seen.update(x_t=x_t, t=t, cond=cond)
        return torch.zeros_like(x_t)

    x0, noise, t = torch.randn(3, 4, dtype=F64), torch.randn(3, 4, dtype=F64), torch.tensor([5, 0, 999])
    labels = torch.tensor([1, 2, 3])
    DiffusionLoss(schedule)(model, x0, t=t, noise=noise, labels=labels)
    torch.testing.assert_close(seen["x_t"], q_sample(schedule, x0, t, noise), rtol=0, atol=0)
    assert seen["t"].dtype == torch.int64 and seen["t"].tolist() == [5, 0, 999]
    assert seen["cond"].keys() == {"labels"} and seen["cond"]["labels"] is labels


def test_zero_model_with_eps_target_has_unit_loss_on_average(schedule) -> None:
    # E‖ε‖²/D = 1; the per-sample mean of D = 16 squares has std √(2/D), so the batch mean of 4096
    # has std √(2/(16·4096)) ≈ 0.0055.
    x0 = torch.randn(4096, 16, generator=torch.Generator().manual_seed(1))
    loss = DiffusionLoss(schedule, "eps")(_zero_model, x0, generator=torch.Generator().manual_seed(2))
    assert loss.mean().item() == pytest.approx(1.0, abs=5 * math.sqrt(2 / (16 * 4096)))


def test_x0_and_v_targets_against_scalar_formulas(schedule) -> None:
    generator = torch.Generator().manual_seed(3)
    x0 = torch.randn(4, 6, generator=generator, dtype=F64)
    noise = torch.randn(4, 6, generator=generator, dtype=F64)
    t = torch.tensor([0, 10, 600, 999])
    x0_loss = DiffusionLoss(schedule, "x0")(_zero_model, x0, t=t, noise=noise)
    v_loss = DiffusionLoss(schedule, "v")(_zero_model, x0, t=t, noise=noise)
    for i, step in enumerate(t.tolist()):
        a, s = math.sqrt(schedule.alpha_bar[step].item()), math.sqrt(1 - schedule.alpha_bar[step].item())
        expected_x0 = sum(x * x for x in x0[i].tolist()) / 6
        expected_v = (
            sum((a * e - s * x) ** 2 for x, e in zip(x0[i].tolist(), noise[i].tolist(), strict=True)) / 6
        )
        assert x0_loss[i].item() == pytest.approx(expected_x0, rel=1e-12)
        assert v_loss[i].item() == pytest.approx(expected_v, rel=1e-12)


@pytest.mark.parametrize("parameterization", PARAMETERIZATIONS)
@pytest.mark.parametrize("gamma", [1.0, 5.0, 1e9])
def test_min_snr_weights_match_formula(schedule, parameterization: str, gamma: float) -> None:
    weights = min_snr_weights(schedule, parameterization, gamma)
    assert weights.shape == (1000,) and weights.dtype == F64
    for i in (0, 1, 300, 700, 999):
        snr = schedule.alpha_bar[i].item() / (1 - schedule.alpha_bar[i].item())
        clipped = min(snr, gamma)
        expected = {"eps": clipped / snr, "x0": clipped, "v": clipped / (snr + 1)}[parameterization]
        assert weights[i].item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("parameterization", PARAMETERIZATIONS)
def test_min_snr_loss_is_weight_times_squared_error(schedule, parameterization: str) -> None:
    gamma, offset = 5.0, 0.3
    x0, noise = torch.randn(5, 3, dtype=F64), torch.randn(5, 3, dtype=F64)
    t = torch.tensor([0, 50, 250, 600, 999])
    model = _oracle(schedule, x0, parameterization)
    loss_fn = DiffusionLoss(schedule, parameterization, min_snr_gamma=gamma)
    loss = loss_fn(lambda x_t, t: model(x_t, t) + offset, x0, t=t, noise=noise)
    expected = min_snr_weights(schedule, parameterization, gamma)[t] * offset**2
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=0)  # the weights are applied in float32


def test_min_snr_makes_every_target_the_same_clipped_x0_loss(schedule) -> None:
    # ‖ε−ε̂‖² = SNR‖x₀−x̂₀‖² and ‖v−v̂‖² = (SNR+1)‖x₀−x̂₀‖², so with min-SNR-γ weights one x̂₀ gives
    # one loss, min(SNR, γ)‖x₀−x̂₀‖², whichever target the network is trained on (Hang et al. 2023).
    gamma = 5.0
    generator = torch.Generator().manual_seed(4)
    x0 = torch.randn(6, 2, 3, 3, generator=generator, dtype=F64)
    noise = torch.randn(6, 2, 3, 3, generator=generator, dtype=F64)
    t = torch.tensor([0, 40, 200, 500, 800, 999])

    def predict_x0(x_t):
        return 0.5 * x_t.tanh()

    def as_output(parameterization):
        def model(x_t, t):
            alpha_bar = schedule.at(schedule.alpha_bar, t, x_t)
            x0_hat = predict_x0(x_t)
            eps_hat = eps_from_x0(x_t, x0_hat, alpha_bar)
            return training_target(x0_hat, eps_hat, alpha_bar, parameterization)

        return model

    losses = {
        p: DiffusionLoss(schedule, p, min_snr_gamma=gamma)(as_output(p), x0, t=t, noise=noise)
        for p in PARAMETERIZATIONS
    }
    snr = schedule.snr[t]
    x_t = q_sample(schedule, x0, t, noise)
    expected = snr.clamp(max=gamma) * (predict_x0(x_t) - x0).square().flatten(1).mean(1)
    for p in PARAMETERIZATIONS:
        torch.testing.assert_close(losses[p], expected, rtol=1e-6, atol=0)


def test_weights_cached_as_float32_per_device(schedule) -> None:
    loss_fn = DiffusionLoss(schedule, "v", min_snr_gamma=5.0)
    cpu_weights = loss_fn.weights_on("cpu")
    assert cpu_weights.dtype == torch.float32 and cpu_weights.device.type == "cpu"
    assert loss_fn.weights_on(torch.device("cpu")) is cpu_weights
    torch.testing.assert_close(cpu_weights, min_snr_weights(schedule, "v", 5.0).float())
    unweighted = DiffusionLoss(schedule).weights_on("cpu")
    assert (unweighted == 1).all()


def test_generator_makes_the_loss_reproducible_and_leaves_global_rng_alone(schedule) -> None:
    x0 = torch.randn(8, 3, 4, 4, generator=torch.Generator().manual_seed(5))
    loss_fn = DiffusionLoss(schedule)
    global_state = torch.get_rng_state()
    first = loss_fn(_zero_model, x0, generator=torch.Generator().manual_seed(6))
    assert torch.equal(torch.get_rng_state(), global_state)
    torch.manual_seed(123)  # a different global state must not change a generator-driven loss
    second = loss_fn(_zero_model, x0, generator=torch.Generator().manual_seed(6))
    other_seed = loss_fn(_zero_model, x0, generator=torch.Generator().manual_seed(7))
    assert torch.equal(first, second)
    assert not torch.equal(first, other_seed)


def test_timesteps_cover_the_whole_range_uniformly() -> None:
    schedule = make_schedule("linear", 4)
    seen = []

    def model(x_t, t):
        seen.append(t)
        return torch.zeros_like(x_t)

    DiffusionLoss(schedule)(model, torch.zeros(40_000, 1), generator=torch.Generator().manual_seed(8))
    counts = torch.bincount(seen[0], minlength=4)
    assert counts.numel() == 4
    # Each count is Binomial(40000, 1/4): std ≈ 87.
    assert (counts - 10_000).abs().max() < 450


def test_half_precision_error_is_squared_in_float32(schedule) -> None:
    # 1 + 2⁻⁷ is exact in bfloat16 but its square 1 + 2⁻⁶ + 2⁻¹⁴ is not: squaring in bfloat16 would
    # round it to 1 + 2⁻⁶.
    error = 1 + 2**-7
    x0 = torch.zeros(2, 4, dtype=torch.bfloat16)
    noise = torch.zeros(2, 4, dtype=torch.bfloat16)
    loss = DiffusionLoss(schedule)(lambda x_t, t: torch.full_like(x_t, error), x0, noise=noise)
    assert loss.dtype == torch.float32
    assert loss.tolist() == [error**2, error**2]


@pytest.mark.parametrize("parameterization", ["score", "epsilon", ""])
def test_unknown_parameterization_rejected(schedule, parameterization: str) -> None:
    with pytest.raises(
        ValueError, match=rf"unknown parameterization {parameterization!r}; allowed: eps, x0, v"
    ):
        DiffusionLoss(schedule, parameterization)


@pytest.mark.parametrize("gamma", [0.0, -1.0, float("nan"), float("inf"), True])
def test_bad_min_snr_gamma_rejected(schedule, gamma: float) -> None:
    with pytest.raises(
        ValueError, match=rf"min_snr_gamma={gamma!r} is invalid; it must be a finite number > 0"
    ):
        DiffusionLoss(schedule, min_snr_gamma=gamma)


def test_bad_t_rejected(schedule) -> None:
    x0 = torch.zeros(3, 2)
    with pytest.raises(ValueError, match=r"t has shape \(2,\); it must be \(3,\), one timestep per sample"):
        DiffusionLoss(schedule)(_zero_model, x0, t=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"t has dtype torch.float32; it must hold integer timestep indices"):
        DiffusionLoss(schedule)(_zero_model, x0, t=torch.tensor([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match=r"t contains 1000; timesteps must lie in 0\.\.999"):
        DiffusionLoss(schedule)(_zero_model, x0, t=torch.tensor([0, 1000, 5]))
    with pytest.raises(ValueError, match=r"t contains -1; timesteps must lie in 0\.\.999"):
        DiffusionLoss(schedule)(_zero_model, x0, t=torch.tensor([-1, 0, 5]))


def test_bad_noise_shape_rejected(schedule) -> None:
    with pytest.raises(ValueError, match=r"noise has shape \(3, 1\); it must match x0's \(3, 2\)"):
        DiffusionLoss(schedule)(_zero_model, torch.zeros(3, 2), noise=torch.zeros(3, 1))


def test_model_output_shape_mismatch_rejected(schedule) -> None:
    # A (B, 1) output would broadcast against a (B, 2) target and train silently on the wrong thing.
    with pytest.raises(ValueError, match=r"model output has shape \(3, 1\); it must match x0's \(3, 2\)"):
        DiffusionLoss(schedule)(lambda x_t, t: x_t[:, :1], torch.zeros(3, 2))


def test_x0_without_data_dims_rejected(schedule) -> None:
    with pytest.raises(ValueError, match=r"x0 has shape \(5,\); it needs a batch dimension and data dims"):
        DiffusionLoss(schedule)(_zero_model, torch.zeros(5))


def test_generator_on_another_device_rejected(schedule) -> None:
    x0 = torch.empty(2, 3, device="meta")
    with pytest.raises(ValueError, match=r"generator is on cpu but x0 is on meta; they must match"):
        DiffusionLoss(schedule)(_zero_model, x0, generator=torch.Generator())
