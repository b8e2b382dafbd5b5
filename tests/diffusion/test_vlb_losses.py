"""Improved DDPM's objectives: L_hybrid = L_simple + λ L_vlb with a stop-gradient on the mean, and L_vlb.

What is checked: each loss is its definition written out from the likelihood terms; the L_vlb part of
L_hybrid sends no gradient to the mean (autograd), while L_vlb itself does; importance-sampled t is
weighted 1/(T p_t) and recorded; the error paths.
"""

from __future__ import annotations

import pytest
import torch

from ddpm.diffusion.likelihood import bits_per_dim, vlb_terms
from ddpm.diffusion.losses import DiffusionLoss, HybridLoss, VLBLoss
from ddpm.diffusion.process import predict_x0_eps, q_sample
from ddpm.diffusion.schedules import NoiseSchedule, make_schedule
from ddpm.diffusion.timestep_sampler import LossSecondMomentResampler
from ddpm.diffusion.variances import reverse_log_variance

F64 = torch.float64
SCHEDULE = make_schedule("cosine", 200)
T = SCHEDULE.num_steps


class MeanAndVariance(torch.nn.Module):
    """A network whose prediction depends only on ``mean_weight`` and its variance channels only on
    ``variance_weight``: which of the two a loss's gradient reaches is then visible."""

    def __init__(self, learned: bool = True) -> None:
        super().__init__()
        self.mean_weight = torch.nn.Parameter(torch.tensor(0.3, dtype=F64))
        self.variance_weight = torch.nn.Parameter(torch.tensor(0.2, dtype=F64))
        self.learned = learned

    def forward(self, x_t, t):
        level = (t.to(F64) / T).reshape(-1, *[1] * (x_t.ndim - 1))
        prediction = self.mean_weight * torch.sin(2 * x_t) + level
        if not self.learned:
            return prediction
        return torch.cat([prediction, torch.tanh(self.variance_weight * x_t + level - 0.5)], dim=1)


def _batch(seed: int = 0):
    """8-bit data x₀ (6, 2, 3, 3), timesteps covering the decoder and both ends, and noise."""
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randint(0, 256, (6, 2, 3, 3), generator=g).to(F64) / 127.5 - 1
    t = torch.tensor([0, 1, 5, 100, 0, T - 1])
    return x0, t, torch.randn(x0.shape, generator=g, dtype=F64)


def _vlb_nats(net, x0, t, noise, parameterization="eps", variance="beta"):
    """L_t per sample (B,), nats, written from the likelihood terms (no stop-gradient)."""
    x_t = q_sample(SCHEDULE, x0, t, noise)
    output = net(x_t, t)
    frac = None
    if output.shape[1] == 2 * x0.shape[1]:
        output, raw = output.chunk(2, dim=1)
        frac = (raw + 1) / 2
    x0_pred, _ = predict_x0_eps(x_t, output, SCHEDULE.at(SCHEDULE.alpha_bar, t, x0), parameterization)
    log_variance = reverse_log_variance(SCHEDULE, t, x0, variance, frac)
    return vlb_terms(SCHEDULE, x0, x_t, t, x0_pred, log_variance)


@pytest.mark.parametrize("parameterization", ["eps", "x0", "v"])
def test_the_hybrid_loss_is_l_simple_plus_lambda_t_times_the_term_in_bits(parameterization):
    net = MeanAndVariance()
    x0, t, noise = _batch()
    hybrid = HybridLoss(SCHEDULE, parameterization)(net, x0, t=t, noise=noise)
    simple = DiffusionLoss(SCHEDULE, parameterization)(lambda x, s: net(x, s)[:, :2], x0, t=t, noise=noise)
    vlb = bits_per_dim(_vlb_nats(net, x0, t, noise, parameterization), 18)
    assert hybrid.shape == (6,) and vlb.abs().min() > 0
    torch.testing.assert_close(hybrid, simple + 0.001 * T * vlb, rtol=1e-12, atol=1e-12)


def test_the_vlb_part_of_the_hybrid_loss_trains_the_variance_only():
    """Nichol & Dhariwal §3.1: 'we apply a stop-gradient to the μ_θ(x_t, t) output for the L_vlb term'."""
    x0, t, noise = _batch(1)
    net = MeanAndVariance()
    HybridLoss(SCHEDULE)(net, x0, t=t, noise=noise).sum().backward()
    hybrid_mean_grad, hybrid_variance_grad = net.mean_weight.grad.clone(), net.variance_weight.grad.clone()
    net.zero_grad()
    simple = DiffusionLoss(SCHEDULE)(lambda x, s: net(x, s)[:, :2], x0, t=t, noise=noise)
    simple.sum().backward()
    assert net.variance_weight.grad is None or net.variance_weight.grad == 0
    assert torch.equal(hybrid_mean_grad, net.mean_weight.grad)  # the vlb part adds nothing to the mean
    assert hybrid_variance_grad.abs() > 1e-6  # and trains the variance
    # without the stop-gradient (pure L_vlb), the mean gets a gradient from the bound
    net.zero_grad()
    VLBLoss(SCHEDULE)(net, x0, t=t, noise=noise).sum().backward()
    assert net.mean_weight.grad.abs() > 1e-6 and net.variance_weight.grad.abs() > 1e-6


@pytest.mark.parametrize(("learned", "variance"), [(True, "beta"), (False, "beta"), (False, "beta_tilde")])
def test_the_vlb_loss_is_t_times_the_term_in_bits(learned, variance):
    net = MeanAndVariance(learned)
    x0, t, noise = _batch(2)
    loss = VLBLoss(SCHEDULE, learned_variance=learned, variance=variance)(net, x0, t=t, noise=noise)
    expected = T * bits_per_dim(_vlb_nats(net, x0, t, noise, variance=variance), 18)
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=1e-12)


def test_importance_sampled_t_is_weighted_and_recorded():
    net = MeanAndVariance()
    x0, _, _ = _batch(3)
    sampler = LossSecondMomentResampler(T, history_per_term=1, uniform_prob=0.0)
    loss_fn = VLBLoss(SCHEDULE, timestep_sampler=sampler)
    for step in range(T):  # warm up: one loss per t
        sampler.update(torch.tensor([step]), torch.tensor([1.0 + step % 7]))
    assert sampler.warmed_up
    p = sampler.probabilities()  # before this batch's losses are recorded
    generator = torch.Generator().manual_seed(4)
    loss = loss_fn(net, x0, generator=generator)
    # the same draws again, by hand: t ~ p_t, then ε, and the unweighted loss T·L_t
    generator = torch.Generator().manual_seed(4)
    t = torch.multinomial(p, 6, replacement=True, generator=generator)
    noise = torch.randn(x0.shape, generator=generator, dtype=F64)
    unweighted = VLBLoss(SCHEDULE)(net, x0, t=t, noise=noise)
    torch.testing.assert_close(loss, unweighted / (T * p[t]), rtol=1e-6, atol=0)
    recorded = sampler.loss_history[t, 0]  # history of 1: the last loss seen at each t
    last_of_t = {int(s): float(v) for s, v in zip(t, unweighted.detach(), strict=True)}
    assert torch.allclose(recorded, torch.tensor([last_of_t[int(s)] for s in t], dtype=F64))


def test_a_given_t_is_neither_weighted_nor_recorded():
    net = MeanAndVariance()
    x0, t, noise = _batch(5)
    sampler = LossSecondMomentResampler(T)
    loss = VLBLoss(SCHEDULE, timestep_sampler=sampler)(net, x0, t=t, noise=noise)
    torch.testing.assert_close(loss, VLBLoss(SCHEDULE)(net, x0, t=t, noise=noise), rtol=0, atol=0)
    assert sampler.loss_counts.sum() == 0


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: HybridLoss(SCHEDULE, vlb_weight=-1.0), r"vlb_weight=-1\.0 is invalid; it must be a finite"),
        (lambda: HybridLoss(SCHEDULE, decoder="logistic"), r"unknown decoder 'logistic'"),
        (lambda: VLBLoss(SCHEDULE, variance="learned"), r"unknown variance 'learned'; allowed: beta, beta_"),
        (lambda: VLBLoss(SCHEDULE, timestep_sampler=LossSecondMomentResampler(10)),
         r"timestep_sampler has T=10 but the schedule 200"),
        (lambda: HybridLoss(NoiseSchedule(torch.tensor([0.5], dtype=F64))), r"the schedule has T=1"),
    ],
)  # fmt: skip
def test_bad_settings_are_refused(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_a_network_without_variance_channels_is_refused():
    x0, t, noise = _batch()
    fixed = MeanAndVariance(learned=False)
    with pytest.raises(ValueError, match=r"a learned-variance model must output \(6, 4, 3, 3\)"):
        HybridLoss(SCHEDULE)(fixed, x0, t=t, noise=noise)
    with pytest.raises(
        ValueError, match=r"model output has shape \(6, 4, 3, 3\); it must match x0's \(6, 2, 3, 3\)"
    ):
        VLBLoss(SCHEDULE, learned_variance=False)(MeanAndVariance(), x0, t=t, noise=noise)


def test_continuous_data_needs_the_continuous_decoder():
    x0 = torch.randn(4, 2, 3, 3, dtype=F64)
    t = torch.zeros(4, dtype=torch.long)
    with pytest.raises(ValueError, match=r"x0 is not 8-bit data"):
        HybridLoss(SCHEDULE)(MeanAndVariance(), x0, t=t)
    loss = HybridLoss(SCHEDULE, decoder="continuous")(MeanAndVariance(), x0, t=t)
    assert torch.isfinite(loss).all()
