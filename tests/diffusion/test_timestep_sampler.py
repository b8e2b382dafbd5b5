"""Importance sampling of t for L_vlb (Nichol & Dhariwal 2021, eq. 18; improved-diffusion's
LossSecondMomentResampler): uniform until every t has its 10 losses, then p_t ∝ √E[L_t²]."""

from __future__ import annotations

import pytest
import torch

from ddpm.diffusion.timestep_sampler import LossSecondMomentResampler

F64 = torch.float64


def _fill(sampler: LossSecondMomentResampler, values_per_t, rounds: int) -> None:
    for _ in range(rounds):
        steps = torch.arange(sampler.num_steps)
        sampler.update(steps, torch.as_tensor(values_per_t, dtype=F64))


def test_uniform_with_weights_one_until_every_t_has_its_history():
    sampler = LossSecondMomentResampler(5, uniform_prob=0.0)
    _fill(sampler, [1.0, 2.0, 3.0, 4.0, 5.0], rounds=9)
    sampler.update(torch.tensor([0, 1, 2, 3]), torch.ones(4))  # t = 4 still has 9 of 10
    assert not sampler.warmed_up
    torch.testing.assert_close(sampler.probabilities(), torch.full((5,), 0.2, dtype=F64), rtol=0, atol=0)
    t, weights = sampler.sample(10_000, generator=torch.Generator().manual_seed(0))
    assert torch.equal(weights, torch.ones(10_000))
    counts = torch.bincount(t, minlength=5).double()
    assert (counts / 10_000 - 0.2).abs().max() < 0.02


def test_after_warm_up_p_t_is_proportional_to_the_root_mean_square_loss():
    sampler = LossSecondMomentResampler(4, uniform_prob=0.0)
    # t = 0: constant 3; t = 1: ±3 alternating (mean 0, same second moment); t = 2: 1; t = 3: 0, then 2
    for k in range(10):
        sampler.update(
            torch.arange(4), torch.tensor([3.0, 3.0 if k % 2 else -3.0, 1.0, 0.0 if k < 5 else 2.0])
        )
    assert sampler.warmed_up
    rms = torch.tensor([3.0, 3.0, 1.0, (0.5 * 4.0) ** 0.5], dtype=F64)
    torch.testing.assert_close(sampler.probabilities(), rms / rms.sum(), rtol=1e-12, atol=0)
    t, weights = sampler.sample(20_000, generator=torch.Generator().manual_seed(1))
    p = rms / rms.sum()
    torch.testing.assert_close(weights, (1 / (4 * p[t])).float())
    frequencies = torch.bincount(t, minlength=4).double() / 20_000
    assert (frequencies - p).abs().max() < 0.015
    # importance weighting keeps the estimate unbiased: E_p[w_t L_t] = mean_t L_t
    losses = torch.tensor([5.0, -1.0, 2.0, 7.0], dtype=F64)
    torch.testing.assert_close((p * losses / (4 * p)).sum(), losses.mean())


def test_the_uniform_mixture_and_the_sliding_history():
    sampler = LossSecondMomentResampler(2, history_per_term=3, uniform_prob=0.1)
    _fill(sampler, [1.0, 1.0], rounds=3)
    _fill(sampler, [4.0, 1.0], rounds=3)  # the three 1s of t = 0 are gone
    assert sampler.loss_history[0].tolist() == [4.0, 4.0, 4.0]
    p = torch.tensor([0.8, 0.2], dtype=F64) * 0.9 + 0.05
    torch.testing.assert_close(sampler.probabilities(), p, rtol=1e-12, atol=0)
    sampler.update(torch.tensor([1]), torch.tensor([7.0]))
    assert sampler.loss_history[1].tolist() == [1.0, 1.0, 7.0]  # oldest out, newest last


def test_the_state_round_trips_and_bad_input_is_refused():
    sampler = LossSecondMomentResampler(3, history_per_term=2)
    _fill(sampler, [1.0, 2.0, 3.0], rounds=2)
    copy = LossSecondMomentResampler(3, history_per_term=2)
    copy.load_state_dict(sampler.state_dict())
    assert copy.warmed_up and torch.equal(copy.probabilities(), sampler.probabilities())
    with pytest.raises(
        ValueError, match=r"resampler state has shapes \(3, 2\), \(3,\); this sampler needs \(4, 10\), \(4,\)"
    ):
        LossSecondMomentResampler(4).load_state_dict(sampler.state_dict())
    with pytest.raises(ValueError, match=r"t \(2,\) and losses \(3,\) must both be \(B,\)"):
        sampler.update(torch.tensor([0, 1]), torch.ones(3))
    with pytest.raises(ValueError, match=r"num_steps=0 is invalid; it must be an integer ≥ 1"):
        LossSecondMomentResampler(0)
    with pytest.raises(ValueError, match=r"uniform_prob=1\.5 is invalid; it must lie in \[0, 1\]"):
        LossSecondMomentResampler(3, uniform_prob=1.5)
