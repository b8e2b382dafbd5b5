"""Timestep spacings against their sources (diffusers, the DDIM repo) and the respaced chain."""

import itertools

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler

from ddpm.diffusion.samplers import respaced_chain, timesteps
from ddpm.diffusion.schedules import make_schedule

T = 1000


@pytest.mark.parametrize(("ours", "theirs"), [("uniform", "leading"), ("trailing", "trailing")])
def test_spacing_matches_diffusers_for_every_step_count(ours, theirs):
    scheduler = DDPMScheduler(num_train_timesteps=T, timestep_spacing=theirs, steps_offset=0)
    for steps in range(1, T + 1):
        scheduler.set_timesteps(steps)
        got = timesteps(T, steps, ours)
        assert got.dtype == torch.int64 and got.shape == (steps,)
        # For some S, diffusers' float arange adds an (S+1)-th step, timestep −1; we stop at S.
        assert torch.equal(got, scheduler.timesteps[:steps]), steps


def test_quadratic_matches_ddim_repo():
    for steps in (2, 10, 20, 29):
        seq = [
            int(s) for s in list(np.linspace(0, np.sqrt(T * 0.8), steps) ** 2)
        ]  # ddim runners/diffusion.py
        assert timesteps(T, steps, "quadratic").tolist() == seq[::-1]


@pytest.mark.parametrize("spacing", ["uniform", "trailing", "quadratic"])
def test_spacings_are_strictly_descending_and_in_range(spacing):
    for steps in (1, 7, 10, 20):
        got = timesteps(T, steps, spacing)
        assert (got[:-1] > got[1:]).all() and got.min() >= 0 and got.max() <= T - 1


@pytest.mark.parametrize("spacing", ["uniform", "trailing"])
def test_as_many_steps_as_training_visits_every_timestep(spacing):
    assert timesteps(T, T, spacing).tolist() == list(range(T - 1, -1, -1))


def test_uniform_ends_at_zero_and_trailing_starts_at_last_step():
    assert timesteps(T, 10, "uniform").tolist() == list(range(900, -1, -100))
    assert timesteps(T, 10, "trailing").tolist() == list(range(999, 0, -100))


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((T, 10, "linspace"), "unknown spacing 'linspace'"),
        ((T, 0, "uniform"), r"steps=0 is invalid; .* 1…1000"),
        ((T, T + 1, "uniform"), r"steps=1001 is invalid"),
        ((T, 2.5, "uniform"), r"steps=2.5 is invalid"),
        ((0, 1, "uniform"), r"num_train_steps=0 is invalid"),
        # ⌊(k·√800/(S−1))²⌋ repeats 0 once S > 29 (the DDIM repo would silently run empty steps).
        ((T, 30, "quadratic"), r"spacing 'quadratic' with steps=30 repeats timesteps for T=1000"),
    ],
)
def test_timesteps_errors(args, match):
    with pytest.raises(ValueError, match=match):
        timesteps(*args)


def test_full_chain_reproduces_betas():
    schedule = make_schedule("linear", T)
    chain = respaced_chain(schedule, timesteps(T, T))
    betas = torch.tensor(
        [1 - step.alpha_bar / step.alpha_bar_prev for step in chain[::-1]], dtype=torch.float64
    )
    torch.testing.assert_close(betas, schedule.betas, rtol=1e-10, atol=0)


def test_respaced_chain_links_consecutive_steps_and_ends_at_clean_data():
    schedule = make_schedule("cosine", T)
    steps = timesteps(T, 10, "trailing")
    chain = respaced_chain(schedule, steps)
    assert [step.t for step in chain] == steps.tolist()
    for step, following in itertools.pairwise(chain):
        assert step.alpha_bar_prev == following.alpha_bar == schedule.alpha_bar[following.t].item()
    assert chain[-1].alpha_bar_prev == 1.0


@pytest.mark.parametrize("steps", [[], [5, 5], [3, 7], [T, 3], [4, -1]])
def test_respaced_chain_rejects_bad_timesteps(steps):
    with pytest.raises(
        ValueError, match=r"timesteps \[.*\] are invalid; need a non-empty, strictly descending"
    ):
        respaced_chain(make_schedule("linear", T), torch.tensor(steps, dtype=torch.int64))
