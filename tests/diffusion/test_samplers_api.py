"""Sampler contract: batching, seeds, x_T, trajectory, callback, nfe, cond, and every error path."""

import pytest
import torch

from ddpm.diffusion.prediction import Parameterized, Prediction, to_prediction
from ddpm.diffusion.samplers import (
    SAMPLERS,
    ancestral_sample,
    ancestral_step,
    ddim_sample,
    ddim_step,
    per_sample_noise,
    sample_seeds,
    timesteps,
)
from ddpm.diffusion.schedules import make_schedule

SCHEDULE = make_schedule("linear", 100)
RUNS = {  # stochastic settings, so that per-step noise matters
    "ddpm": {"steps": 20},
    "ddim": {"steps": 20, "eta": 0.5},
}


def run(name, model, shape_or_noise, **kwargs):
    """SAMPLERS[name] over the ε-network ``model``, wrapped as every caller wraps a network."""
    return SAMPLERS[name](
        Parameterized(model, SCHEDULE), SCHEDULE, shape_or_noise, **{**RUNS[name], **kwargs}
    )


def test_registry_names_the_two_samplers():
    assert SAMPLERS["ddpm"] is ancestral_sample and SAMPLERS["ddim"] is ddim_sample


@pytest.mark.parametrize("name", ["ddpm", "ddim"])
def test_image_i_does_not_depend_on_batch_size(name, toy_denoiser):
    # Bitwise: the toy denoiser and every sampler operation act elementwise, and each row's noise
    # comes from its own generator, so no float may differ.
    seeds = sample_seeds(5, 6)
    whole = run(name, toy_denoiser, (6, 2, 3, 3), seeds=seeds).samples
    parts = [
        run(name, toy_denoiser, (n, 2, 3, 3), seeds=s).samples for n, s in ((2, seeds[:2]), (4, seeds[2:]))
    ]
    assert torch.equal(whole, torch.cat(parts))


@pytest.mark.parametrize("name", ["ddpm", "ddim"])
def test_batch_independence_with_a_convolution(name):
    # A convolution may sum in a different order for another batch size: equal to float32 rounding.
    conv = torch.nn.Conv2d(2, 2, 3, padding=1)
    torch.nn.init.normal_(conv.weight, std=0.1, generator=torch.Generator().manual_seed(0))
    seeds = sample_seeds(6, 6)
    with torch.inference_mode():
        whole = run(name, lambda x, t: conv(x), (6, 2, 5, 5), seeds=seeds).samples
        parts = [
            run(name, lambda x, t: conv(x), (3, 2, 5, 5), seeds=s).samples for s in (seeds[:3], seeds[3:])
        ]
    torch.testing.assert_close(whole, torch.cat(parts), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", ["ddpm", "ddim"])
def test_given_x_T_reproduces_the_shape_call(name, toy_denoiser):
    seeds = [10, 20, 30]
    from_shape = run(name, toy_denoiser, (3, 4), seeds=seeds).samples
    from_noise = run(name, toy_denoiser, per_sample_noise(seeds, (4,)), seeds=seeds).samples
    assert torch.equal(from_shape, from_noise)


@pytest.mark.parametrize("name", ["ddpm", "ddim"])
def test_default_seeds_are_sample_seeds_zero(name, toy_denoiser):
    assert torch.equal(
        run(name, toy_denoiser, (3, 4)).samples,
        run(name, toy_denoiser, (3, 4), seeds=sample_seeds(0, 3)).samples,
    )
    assert not torch.equal(
        run(name, toy_denoiser, (3, 4)).samples,
        run(name, toy_denoiser, (3, 4), seeds=sample_seeds(1, 3)).samples,
    )


@pytest.mark.parametrize("spacing", ["uniform", "trailing"])
def test_ddim_eta_one_is_ancestral_beta_tilde_on_the_same_steps(spacing, toy_denoiser):
    seeds = sample_seeds(8, 4)
    denoiser = Parameterized(toy_denoiser, SCHEDULE)
    ddim = ddim_sample(denoiser, SCHEDULE, (4, 6), steps=10, eta=1.0, spacing=spacing, seeds=seeds)
    ancestral = ancestral_sample(denoiser, SCHEDULE, (4, 6), steps=10, spacing=spacing,
                                 variance="beta_tilde", seeds=seeds)  # fmt: skip
    torch.testing.assert_close(ddim.samples, ancestral.samples, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("clip", [None, 0.5])
def test_ddim_eta_one_step_is_ancestral_beta_tilde_step(clip):
    g = torch.Generator().manual_seed(0)
    x_t, output, noise = (torch.randn(4, 8, generator=g, dtype=torch.float64) for _ in range(3))
    for alpha_bar, alpha_bar_prev in [(0.1, 0.3), (0.5, 0.9), (0.98, 1.0)]:
        prediction = to_prediction(x_t, output, torch.tensor(alpha_bar, dtype=torch.float64), "eps", clip)
        ddim = ddim_step(x_t, prediction, alpha_bar, alpha_bar_prev, eta=1.0, noise=noise)
        anc = ancestral_step(
            x_t, prediction.x0, alpha_bar, alpha_bar_prev, variance="beta_tilde", noise=noise
        )
        torch.testing.assert_close(ddim, anc, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["ddpm", "ddim"])
def test_nfe_counts_model_calls(name, toy_denoiser):
    calls = []

    def model(x, t):
        calls.append(t)
        return toy_denoiser(x, t)

    result = run(name, model, (2, 3), steps=7)
    assert result.nfe == len(calls) == 7
    assert [int(t[0]) for t in calls] == timesteps(100, 7).tolist()
    assert all(t.dtype == torch.int64 and t.shape == (2,) and (t == t[0]).all() for t in calls)
    assert ancestral_sample(Parameterized(model, SCHEDULE), SCHEDULE, (2, 3)).nfe == 100  # steps=None: all T


@pytest.mark.parametrize("name", ["ddpm", "ddim"])
def test_callback_sees_every_step_in_order(name, toy_denoiser):
    seen = []
    result = run(name, toy_denoiser, (2, 3), steps=5, trajectory_steps="all",
                 callback=lambda i, t, x_t, x0: seen.append((i, t, x_t.clone(), x0.clone())))  # fmt: skip
    assert [(i, t) for i, t, _, _ in seen] == list(enumerate(timesteps(100, 5).tolist()))
    for (_, t, x_t, x0), step in zip(seen, result.trajectory, strict=False):
        assert step.t == t and torch.equal(step.x_t, x_t) and torch.equal(step.x0_pred, x0)


@pytest.mark.parametrize("name", ["ddpm", "ddim"])
def test_trajectory_all_records_each_step_then_the_result(name, toy_denoiser):
    x_T = per_sample_noise([1, 2], (3,))
    result = run(name, toy_denoiser, x_T, seeds=[1, 2], steps=5, trajectory_steps="all")
    assert [s.t for s in result.trajectory] == [*timesteps(100, 5).tolist(), -1]
    assert torch.equal(result.trajectory[0].x_t, x_T)
    final = result.trajectory[-1]
    assert torch.equal(final.x_t, result.samples) and torch.equal(final.x0_pred, result.samples)
    assert torch.equal(result.trajectory[-2].x0_pred, result.samples)  # the last step returns x̂₀
    assert all(s.x_t.device.type == "cpu" and s.x0_pred.device.type == "cpu" for s in result.trajectory)


@pytest.mark.parametrize("name", ["ddpm", "ddim"])
def test_trajectory_subset_and_none(name, toy_denoiser):
    steps = timesteps(100, 10).tolist()
    chosen = run(name, toy_denoiser, (2, 3), steps=10, trajectory_steps={steps[3], steps[0], -1})
    assert [s.t for s in chosen.trajectory] == [steps[0], steps[3], -1]
    assert run(name, toy_denoiser, (2, 3), steps=10).trajectory == []


@pytest.mark.parametrize("name", ["ddpm", "ddim"])
def test_cond_reaches_the_model(name):
    def model(x, t, *, shift):
        return x * 0 + shift[:, None]

    labels = torch.tensor([0.5, -0.5])
    a = run(name, model, (2, 3), seeds=[1, 2], cond={"shift": labels}).samples
    b = run(name, model, (2, 3), seeds=[1, 2], cond={"shift": -labels}).samples
    assert not torch.equal(a, b)


@pytest.mark.parametrize("name", ["ddpm", "ddim"])
def test_samplers_leave_grad_mode_alone(name):
    weight = torch.tensor(0.1, requires_grad=True)
    assert run(name, lambda x, t: weight * x, (2, 3)).samples.requires_grad
    with torch.inference_mode():
        assert not run(name, lambda x, t: weight * x, (2, 3)).samples.requires_grad


@pytest.mark.parametrize("name", ["ddpm", "ddim"])
def test_dtype_and_device_follow_the_arguments(name, toy_denoiser):
    assert run(name, toy_denoiser, (2, 3), dtype=torch.float64).samples.dtype == torch.float64
    assert run(name, toy_denoiser, torch.zeros(2, 3, dtype=torch.float64)).samples.dtype == torch.float64
    assert run(name, toy_denoiser, (2, 3), device="cpu").samples.device.type == "cpu"


def test_clip_bounds_the_prediction(toy_denoiser):
    denoiser = Parameterized(toy_denoiser, SCHEDULE, clip_x0=0.25)
    result = ddim_sample(denoiser, SCHEDULE, (4, 5), steps=10, trajectory_steps="all")
    assert all(s.x0_pred.abs().max() <= 0.25 for s in result.trajectory)


@pytest.mark.parametrize("name", ["ddpm", "ddim"])
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"spacing": "leading"}, "unknown spacing 'leading'; allowed: uniform, trailing, quadratic"),
        ({"steps": 0}, r"steps=0 is invalid; it must be an integer in 1…100"),
        ({"steps": 101}, r"steps=101 is invalid"),
        ({"seeds": [1, 2]}, r"got 2 seeds for a batch of 3; give one seed per sample"),
        ({"seeds": [1, 2, -3]}, r"seed -3 is invalid"),
        ({"trajectory_steps": "some"}, r"trajectory_steps='some' is invalid; use None, 'all' or timesteps"),
        (
            {"trajectory_steps": [3]},
            r"trajectory_steps \[3\] are not visited; this run visits timesteps 95…0",
        ),
    ],
)
def test_sampler_errors(name, kwargs, match, toy_denoiser):
    with pytest.raises(ValueError, match=match):
        run(name, toy_denoiser, (3, 2), **kwargs)


@pytest.mark.parametrize("name", ["ddpm", "ddim"])
@pytest.mark.parametrize(
    ("shape_or_noise", "match"),
    [
        ((), r"shape \(\) is invalid; give \(B, …\)"),
        ((2, 0), r"shape \(2, 0\) is invalid"),
        (torch.zeros(2, 3, dtype=torch.int64), r"x_T must be a floating tensor \(B, …\), got torch.int64"),
    ],
)
def test_bad_shape_or_noise(name, shape_or_noise, match, toy_denoiser):
    with pytest.raises(ValueError, match=match):
        run(name, toy_denoiser, shape_or_noise)


@pytest.mark.parametrize("name", ["ddpm", "ddim"])
def test_model_output_of_another_shape_is_rejected(name):
    with pytest.raises(ValueError, match=r"model output has shape \(2, 6\) but x_t has \(2, 3\)"):
        run(name, lambda x, t: torch.cat([x, x], dim=1), (2, 3))


def test_unknown_variance_is_rejected(toy_denoiser):
    with pytest.raises(ValueError, match="unknown variance 'learned'; allowed: beta, beta_tilde"):
        ancestral_sample(Parameterized(toy_denoiser, SCHEDULE), SCHEDULE, (2, 3), variance="learned")
    with pytest.raises(ValueError, match="unknown variance 'large'"):
        ancestral_step(torch.zeros(1), torch.zeros(1), 0.5, 0.9, variance="large")


@pytest.mark.parametrize("eta", [-0.1, 1.5])
def test_eta_outside_unit_interval_is_rejected(eta, toy_denoiser):
    with pytest.raises(ValueError, match=rf"eta={eta} is invalid; DDIM needs 0 ≤ eta ≤ 1"):
        ddim_sample(Parameterized(toy_denoiser, SCHEDULE), SCHEDULE, (2, 3), eta=eta)
    with pytest.raises(ValueError, match=rf"eta={eta} is invalid"):
        ddim_step(torch.zeros(1), Prediction(torch.zeros(1), torch.zeros(1)), 0.5, 0.9, eta=eta)
