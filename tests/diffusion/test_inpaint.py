"""RePaint: the jump schedule against diffusers, exact pasting, resampling that harmonises a correlated
Gaussian, per-sample noise, and the error paths.

For 2-D data N(0, [[1, ρ], [ρ, 1]]) the exact denoiser is known, and inpainting x₂ given x₁ should
draw from N(ρ x₁, 1 − ρ²). Plain replacement (r = 1) ignores the correlation at high noise and lands
far from ρ x₁; resampling (r > 1) pulls the mean towards it, as RePaint's §4.2 argues. The learning
test on digits is in tests/test_editing.py.
"""

import itertools

import pytest
import torch
from diffusers import RePaintScheduler

from ddpm.diffusion import make_schedule
from ddpm.diffusion.inpaint import check_mask, repaint, repaint_timeline
from ddpm.diffusion.prediction import Parameterized
from ddpm.diffusion.samplers import sample_seeds

SCHEDULE = make_schedule("linear", 1000)
RHO = 0.9
COVARIANCE = torch.tensor([[1.0, RHO], [RHO, 1.0]], dtype=torch.float64)


def correlated_gaussian_eps(x_t, t):
    """Exact ε̂ for x₀ ~ N(0, Σ): x_t ~ N(0, ᾱΣ + (1−ᾱ)I), ε̂ = √(1−ᾱ) (ᾱΣ + (1−ᾱ)I)⁻¹ x_t."""
    alpha_bar = SCHEDULE.alpha_bar[t]  # (B,)
    cov = alpha_bar[:, None, None] * COVARIANCE + (1 - alpha_bar)[:, None, None] * torch.eye(2)
    eps = (1 - alpha_bar).sqrt()[:, None] * torch.linalg.solve(cov, x_t.double().unsqueeze(-1)).squeeze(-1)
    return eps.to(x_t.dtype)


@pytest.mark.parametrize("steps, jump_length, resamples", [(50, 5, 5), (250, 10, 10), (20, 3, 2), (10, 10, 3),
                                                            (7, 2, 4), (12, 1, 1)])  # fmt: skip
def test_timeline_matches_diffusers_repaint_scheduler(steps, jump_length, resamples):
    scheduler = RePaintScheduler(num_train_timesteps=1000)
    scheduler.set_timesteps(steps, jump_length=jump_length, jump_n_sample=resamples)
    theirs = (scheduler.timesteps // (1000 // steps)).tolist()  # the chain's step indices
    ours = [steps - 1 - position for position in repaint_timeline(steps, jump_length, resamples)]
    assert ours[:-1] == theirs and ours[-1] == -1  # −1: the image itself


@pytest.mark.parametrize("steps, jump_length, resamples", [(50, 5, 5), (30, 4, 3), (9, 1, 2)])
def test_timeline_moves_one_step_at_a_time_and_resamples_each_jump_point(steps, jump_length, resamples):
    timeline = repaint_timeline(steps, jump_length, resamples)
    assert timeline[0] == 0 and timeline[-1] == steps
    assert all(abs(b - a) == 1 for a, b in itertools.pairwise(timeline))
    jump_points = len(range(0, steps - jump_length, jump_length))
    backward = sum(b < a for a, b in itertools.pairwise(timeline))
    assert backward == jump_points * (resamples - 1) * jump_length
    assert len(timeline) - 1 == steps + 2 * backward


def test_without_resampling_the_timeline_is_the_plain_chain():
    assert repaint_timeline(6, 2, 1) == list(range(7))


def _inpaint_x2(resamples, n=1000, jump_length=5):
    image = torch.tensor([[1.5, 0.0]], dtype=torch.float64).repeat(n, 1)  # x₁ = 1.5 known, x₂ to fill
    mask = torch.tensor([False, True])
    result = repaint(
        Parameterized(correlated_gaussian_eps, SCHEDULE), SCHEDULE, image, mask,
        steps=50, jump_length=jump_length, resamples=resamples, seeds=sample_seeds(0, n),
    )  # fmt: skip
    assert torch.equal(result.samples[:, 0], image[:, 0])
    return result.samples[:, 1]


def test_resampling_harmonises_the_generated_part_with_the_known_one():
    target = RHO * 1.5  # E[x₂ | x₁ = 1.5] = 1.35, std √(1 − ρ²) = 0.44
    plain = _inpaint_x2(resamples=1)
    resampled = _inpaint_x2(resamples=5)
    # measured with 1,000 samples: plain mean 0.90, resampled 1.24 (standard error ≈ 0.015)
    assert float(target - plain.mean()) > 0.35
    assert float(target - resampled.mean()) < 0.2
    assert abs(float(resampled.std()) - (1 - RHO**2) ** 0.5) < 0.08


def test_unmasked_pixels_equal_the_input_exactly_and_nfe_counts_reverse_steps(toy_denoiser):
    image = torch.rand(3, 1, 6, 6, generator=torch.Generator().manual_seed(0)) * 2 - 1
    mask = torch.zeros(6, 6, dtype=torch.bool)
    mask[2:5, 1:4] = True
    denoiser = Parameterized(toy_denoiser, SCHEDULE, clip_x0=1.0)
    result = repaint(denoiser, SCHEDULE, image, mask, steps=20, jump_length=4, resamples=3)
    assert torch.equal(result.samples[:, :, ~mask], image[:, :, ~mask])
    assert not torch.equal(result.samples[:, :, mask], image[:, :, mask])
    assert result.nfe == 20 + 4 * 2 * 4  # 4 jump points × (r − 1) × j extra reverse steps


def test_nothing_masked_returns_the_image_and_a_float_mask_works(toy_denoiser):
    image = torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    assert torch.equal(
        repaint(Parameterized(toy_denoiser, SCHEDULE), SCHEDULE, image, torch.zeros(4, 4), steps=5).samples,
        image,
    )


def test_each_sample_ignores_the_batch_size(toy_denoiser):
    image = torch.rand(4, 1, 4, 4, generator=torch.Generator().manual_seed(2))
    mask = torch.rand(4, 4, generator=torch.Generator().manual_seed(3)) > 0.5
    seeds = sample_seeds(7, 4)
    options = {"steps": 10, "jump_length": 2, "resamples": 3}
    whole = repaint(
        Parameterized(toy_denoiser, SCHEDULE), SCHEDULE, image, mask, seeds=seeds, **options
    ).samples
    halves = [
        repaint(
            Parameterized(toy_denoiser, SCHEDULE),
            SCHEDULE,
            image[i : i + 2],
            mask,
            seeds=seeds[i : i + 2],
            **options,
        ).samples
        for i in (0, 2)
    ]
    assert torch.equal(whole, torch.cat(halves))
    again = repaint(
        Parameterized(toy_denoiser, SCHEDULE), SCHEDULE, image, mask, seeds=seeds, **options
    ).samples
    assert torch.equal(whole, again)


def test_callback_and_cond_reach_every_model_call():
    calls, seen = [], []

    def model(x_t, t, class_labels):
        calls.append(class_labels)
        return 0.1 * x_t

    labels = torch.tensor([3, 4])
    image = torch.zeros(2, 1, 2, 2)
    result = repaint(Parameterized(model, SCHEDULE), SCHEDULE, image, torch.ones(2, 2), steps=6,
                     jump_length=2, resamples=2, cond={"class_labels": labels},
                     callback=lambda i, t, x: seen.append(i))  # fmt: skip
    assert len(calls) == result.nfe == len(seen) and all(c is labels for c in calls)


@pytest.mark.parametrize(
    "mask, match",
    [
        (torch.ones(5, 5), r"mask shape \(5, 5\) does not match image shape \(2, 1, 4, 4\)"),
        (torch.ones(3, 1, 4, 4), r"mask shape \(3, 1, 4, 4\) does not match image shape"),
        (torch.full((4, 4), 0.5), r"mask values must be 0 \(keep\) or 1 \(generate\)"),
        ([[1, 0]], r"mask must be a tensor, got list"),
    ],
)
def test_bad_masks_are_refused(mask, match):
    with pytest.raises(ValueError, match=match):
        check_mask(mask, torch.zeros(2, 1, 4, 4))


@pytest.mark.parametrize(
    "options, match",
    [
        ({"jump_length": 0}, r"jump_length=0 is invalid; it must be an integer ≥ 1"),
        ({"resamples": 0}, r"resamples=0 is invalid; it must be an integer ≥ 1"),
        ({"resamples": 2.5}, r"resamples=2\.5 is invalid"),
        ({"steps": 2000}, r"steps=2000 is invalid; it must be an integer in 1…1000"),
        ({"variance": "learned"}, r"unknown variance 'learned'"),
    ],
)
def test_bad_options_are_refused(options, match, toy_denoiser):
    with pytest.raises(ValueError, match=match):
        repaint(
            Parameterized(toy_denoiser, SCHEDULE),
            SCHEDULE,
            torch.zeros(1, 1, 2, 2),
            torch.ones(2, 2),
            **{"steps": 4, **options},
        )


def test_integer_images_are_refused(toy_denoiser):
    with pytest.raises(ValueError, match=r"image must be a floating tensor \(B, …\)"):
        repaint(
            Parameterized(toy_denoiser, SCHEDULE),
            SCHEDULE,
            torch.zeros(1, 1, 2, 2, dtype=torch.long),
            torch.ones(2, 2),
        )
