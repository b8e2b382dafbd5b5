"""The variational bound (Ho et al. eq. 5): exact for a model that knows the data, a decoder that is a
distribution over the 256 levels, and every term equal to openai/improved-diffusion's computation.

The improved-diffusion formulas (``normal_kl``, ``approx_standard_normal_cdf``,
``discretized_gaussian_log_likelihood``, ``_vb_terms_bpd``, ``_prior_bpd``, ``calc_bpd_loop``) are
written out below from that repository, with its own tables, in bits per dimension; nothing of
``ddpm.diffusion.likelihood`` is used to compute the expected values.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ddpm.diffusion.likelihood import (
    bits_per_dim,
    bound_timesteps,
    decoder_nll,
    discretized_gaussian_log_likelihood,
    prior_kl,
    variational_bound,
    vlb_terms,
)
from ddpm.diffusion.prediction import Parameterized
from ddpm.diffusion.samplers import sample_seeds
from ddpm.diffusion.schedules import NoiseSchedule, linear_betas, make_schedule
from ddpm.diffusion.variances import reverse_log_variance

F64 = torch.float64
MU, S = 0.2, 0.5  # the Gaussian data N(μ, s²) of the exactness test
LEVELS = torch.arange(256, dtype=F64) / 127.5 - 1  # the 8-bit levels in [−1, 1]


# --- improved-diffusion, written out (improved_diffusion/losses.py, gaussian_diffusion.py) -------------


def ref_normal_kl(mean1, logvar1, mean2, logvar2):
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2)
                  + ((mean1 - mean2) ** 2) * torch.exp(-logvar2))  # fmt: skip


def ref_approx_standard_normal_cdf(x):
    return 0.5 * (1.0 + torch.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * torch.pow(x, 3))))


def ref_discretized_gaussian_log_likelihood(x, *, means, log_scales):
    centered_x = x - means
    inv_stdv = torch.exp(-log_scales)
    cdf_plus = ref_approx_standard_normal_cdf(inv_stdv * (centered_x + 1.0 / 255.0))
    cdf_min = ref_approx_standard_normal_cdf(inv_stdv * (centered_x - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    cdf_delta = cdf_plus - cdf_min
    log_cdf_delta = torch.log(cdf_delta.clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_cdf_delta))


class RefDiffusion:
    """improved-diffusion's GaussianDiffusion tables and its bound terms, in bits/dim."""

    def __init__(self, betas: np.ndarray, var_type: str) -> None:
        self.betas, self.var_type = betas, var_type
        alphas = 1.0 - betas
        self.alphas_cumprod = np.cumprod(alphas)
        self.alphas_cumprod_prev = np.append(1.0, self.alphas_cumprod[:-1])
        self.posterior_variance = betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        self.posterior_log_variance_clipped = np.log(
            np.append(self.posterior_variance[1], self.posterior_variance[1:])
        )
        self.posterior_mean_coef1 = betas * np.sqrt(self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        self.posterior_mean_coef2 = (
            (1.0 - self.alphas_cumprod_prev) * np.sqrt(alphas) / (1.0 - self.alphas_cumprod)
        )

    @staticmethod
    def _extract(arr, t, shape):
        out = torch.from_numpy(arr)[t].to(F64)
        return out.reshape(-1, *[1] * (len(shape) - 1)).expand(shape)

    def q_posterior(self, x_start, x_t, t):
        mean = (self._extract(self.posterior_mean_coef1, t, x_t.shape) * x_start
                + self._extract(self.posterior_mean_coef2, t, x_t.shape) * x_t)  # fmt: skip
        return mean, self._extract(self.posterior_log_variance_clipped, t, x_t.shape)

    def p_mean_log_variance(self, output, x, t, parameterization):
        """p_mean_variance without clipping; the v-parameterization written as in later guided code."""
        C = x.shape[1]
        if self.var_type == "learned_range":
            output, model_var_values = torch.split(output, C, dim=1)
            min_log = self._extract(self.posterior_log_variance_clipped, t, x.shape)
            max_log = self._extract(np.log(self.betas), t, x.shape)
            frac = (model_var_values + 1) / 2
            model_log_variance = frac * max_log + (1 - frac) * min_log
        elif self.var_type == "fixed_large":
            model_log_variance = self._extract(
                np.log(np.append(self.posterior_variance[1], self.betas[1:])), t, x.shape
            )
        else:
            model_log_variance = self._extract(self.posterior_log_variance_clipped, t, x.shape)
        ab = self._extract(self.alphas_cumprod, t, x.shape)
        if parameterization == "eps":
            pred_xstart = torch.sqrt(1.0 / ab) * x - torch.sqrt(1.0 / ab - 1) * output
        elif parameterization == "x0":
            pred_xstart = output
        else:
            pred_xstart = ab.sqrt() * x - (1 - ab).sqrt() * output
        model_mean, _ = self.q_posterior(pred_xstart, x, t)
        return model_mean, model_log_variance

    def vb_terms_bpd(self, output, x_start, x_t, t, parameterization):
        true_mean, true_log_variance_clipped = self.q_posterior(x_start, x_t, t)
        mean, log_variance = self.p_mean_log_variance(output, x_t, t, parameterization)
        kl = ref_normal_kl(true_mean, true_log_variance_clipped, mean, log_variance)
        kl = kl.mean(dim=list(range(1, kl.ndim))) / np.log(2.0)
        decoder_nll = -ref_discretized_gaussian_log_likelihood(
            x_start, means=mean, log_scales=0.5 * log_variance
        )
        decoder_nll = decoder_nll.mean(dim=list(range(1, x_start.ndim))) / np.log(2.0)
        return torch.where((t == 0), decoder_nll, kl)

    def prior_bpd(self, x_start):
        t = torch.full((x_start.shape[0],), len(self.betas) - 1)
        qt_mean = self._extract(np.sqrt(self.alphas_cumprod), t, x_start.shape) * x_start
        qt_log_variance = self._extract(np.log(1.0 - self.alphas_cumprod), t, x_start.shape)
        kl_prior = ref_normal_kl(qt_mean, qt_log_variance, torch.zeros(()), torch.zeros(()))
        return kl_prior.mean(dim=list(range(1, kl_prior.ndim))) / np.log(2.0)


VAR_TYPES = {"learned": "learned_range", "beta": "fixed_large", "beta_tilde": "fixed_small"}  # ours → theirs


def _eight_bit(shape, seed: int) -> torch.Tensor:
    levels = torch.randint(0, 256, shape, generator=torch.Generator().manual_seed(seed))
    levels.view(-1)[:2] = torch.tensor([0, 255])  # both ends of the range, whose bins are open
    return levels.to(F64) / 127.5 - 1


class ToyNet:
    """A fixed nonlinear 'network': an ε/x₀/v-like output and, if learned, variance channels in ±1.3."""

    def __init__(self, learned: bool) -> None:
        self.learned = learned

    def __call__(self, x_t, t):
        scale = (t.to(F64) / 1000).reshape(-1, *[1] * (x_t.ndim - 1))
        prediction = 0.8 * x_t + 0.3 * torch.sin(3 * x_t + scale)
        if not self.learned:
            return prediction
        return torch.cat([prediction, 1.3 * torch.tanh(2 * x_t - scale)], dim=1)


# --- (c) each term against improved-diffusion -----------------------------------------------------------


@pytest.mark.parametrize("schedule_name", ["linear", "cosine"])
@pytest.mark.parametrize("parameterization", ["eps", "x0", "v"])
@pytest.mark.parametrize("variance", ["learned", "beta", "beta_tilde"])
def test_every_term_matches_improved_diffusion(schedule_name, parameterization, variance):
    schedule = make_schedule(schedule_name, 1000)
    reference = RefDiffusion(schedule.betas.numpy(), VAR_TYPES[variance])
    learned = variance == "learned"
    net = ToyNet(learned)
    x0 = _eight_bit((7, 2, 3, 3), seed=1)
    t = torch.tensor([0, 1, 2, 0, 500, 998, 999])  # the decoder and KLs, mixed in one batch
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(2), dtype=F64)
    ab = schedule.at(schedule.alpha_bar, t, x0)
    x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
    output = net(x_t, t)
    expected = reference.vb_terms_bpd(output, x0, x_t, t, parameterization)  # bits/dim
    prediction = Parameterized(net, schedule, parameterization, learned_variance=learned)(x_t, t)
    log_variance = reverse_log_variance(
        schedule, t, x0, "beta" if learned else variance, prediction.variance_frac
    )
    nats = vlb_terms(schedule, x0, x_t, t, prediction.x0, log_variance)
    assert expected.abs().max() > 0.5 and (expected != 0).all()  # real values, not zeros
    torch.testing.assert_close(bits_per_dim(nats, x0[0].numel()), expected, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(
        bits_per_dim(prior_kl(schedule, x0), 18), reference.prior_bpd(x0), rtol=1e-9, atol=1e-12
    )


@pytest.mark.parametrize("variance", ["learned", "beta_tilde"])
def test_the_whole_bound_matches_improved_diffusions_calc_bpd_loop(variance):
    """calc_bpd_loop: for t = T−1 … 0, x_t ~ q(x_t | x₀) and the term; total = Σ terms + prior."""
    schedule = NoiseSchedule(linear_betas(20, 0.005, 0.4))
    reference = RefDiffusion(schedule.betas.numpy(), VAR_TYPES[variance])
    learned = variance == "learned"
    x0 = _eight_bit((3, 1, 4, 4), seed=3)
    seeds = sample_seeds(7, 3)
    generators = [torch.Generator().manual_seed(s) for s in seeds]  # the same per-sample draws as ours
    expected_terms = torch.zeros(3, 20, dtype=F64)
    for t in reversed(range(20)):
        noise = torch.cat([torch.randn((1, 1, 4, 4), generator=g) for g in generators]).to(F64)
        t_batch = torch.full((3,), t)
        ab = float(reference.alphas_cumprod[t])
        x_t = (
            (ab**0.5 * x0 + (1 - ab) ** 0.5 * noise).to(torch.float32).to(F64)
        )  # ours feeds the net x0's dtype
        expected_terms[:, t] = reference.vb_terms_bpd(ToyNet(learned)(x_t, t_batch), x0, x_t, t_batch, "eps")
    expected_total = expected_terms.sum(dim=1) + reference.prior_bpd(x0)
    denoiser = Parameterized(ToyNet(learned), schedule, "eps", learned_variance=learned)
    bound = variational_bound(
        denoiser, schedule, x0.float(), variance="beta" if learned else variance, seeds=seeds
    )
    assert bound.exact and bound.timesteps.tolist() == list(range(20)) and bound.num_dims == 16
    torch.testing.assert_close(bits_per_dim(bound.terms, 16), expected_terms, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(bound.bits_per_dim(), expected_total, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(bound.term_bits_per_dim(), expected_terms.mean(dim=0), rtol=1e-6, atol=1e-6)


# --- (b) the decoder is a distribution over the 256 levels ----------------------------------------------


@pytest.mark.parametrize("mean", [-1.3, -1.0, -0.371, 0.0, 0.5, 1.0, 1.2])
@pytest.mark.parametrize("sigma", [1e-4, 3e-3, 0.05, 1.0, 3.0])
def test_the_discretized_decoder_integrates_to_one_over_the_256_bins(mean, sigma):
    log_variance = torch.full((256,), 2 * math.log(sigma), dtype=F64)
    log_p = discretized_gaussian_log_likelihood(LEVELS, torch.full((256,), mean, dtype=F64), log_variance)
    assert abs(log_p.exp().sum().item() - 1) <= 1e-9 + 256 * 1e-12  # each log is of max(mass, 1e-12)
    if sigma < 0.1:  # (a wide one puts the most mass in the open end bins)
        assert log_p.argmax() == (LEVELS - mean).abs().argmin()


def test_a_narrow_decoder_puts_its_mass_on_one_level_and_the_ends_take_the_tails():
    log_variance = torch.full((3,), 2 * math.log(1e-4), dtype=F64)
    x0 = LEVELS[[0, 100, 255]]
    log_p = discretized_gaussian_log_likelihood(x0, x0, log_variance)
    torch.testing.assert_close(log_p, torch.zeros(3, dtype=F64), rtol=0, atol=1e-9)
    # a mean far outside [−1, 1]: the open end bins hold everything
    far = discretized_gaussian_log_likelihood(LEVELS[[0, 255]], torch.tensor([-50.0, 50.0], dtype=F64),
                                              torch.zeros(2, dtype=F64))  # fmt: skip
    torch.testing.assert_close(far, torch.zeros(2, dtype=F64), rtol=0, atol=1e-6)


def test_data_off_the_8_bit_grid_is_refused_by_the_discretized_decoder():
    x0 = torch.full((2, 3), 0.5)  # 0.5 = 191.25/127.5 − 1: between two levels
    with pytest.raises(ValueError, match=r"x0 is not 8-bit data in \[-1, 1\] .* use decoder='continuous'"):
        decoder_nll(x0, x0, torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"unknown decoder 'logistic'; allowed: discretized, continuous"):
        decoder_nll(x0, x0, torch.zeros(2, 3), decoder="logistic")
    decoder_nll(x0, x0, torch.zeros(2, 3), decoder="continuous")  # fine for continuous data


# --- (a) exact for a model that knows the data -----------------------------------------------------------


class ExactGaussianNet:
    """The optimal network for data N(μ, s²) per dimension, with the optimal learned variance.

    (x₀, x_t) are jointly Gaussian: E[x₀ | x_t] = μ + √ᾱ s²/(ᾱ s² + 1 − ᾱ) (x_t − √ᾱ μ) and
    Var[x₀ | x_t] = s²(1 − ᾱ)/(ᾱ s² + 1 − ᾱ). The true reverse step q(x_{t−1} | x_t) is Gaussian with mean
    μ̃(E[x₀ | x_t], x_t) and variance β̃_t + c₁² Var[x₀ | x_t] (c₁ = √ᾱ_{t−1} β_t/(1 − ᾱ_t)), written in
    eq. 15's range as r = 2v − 1 with v = (log Σ − log β̃_clipped)/(log β − log β̃_clipped).
    """

    def __init__(self, schedule: NoiseSchedule, parameterization: str, learned: bool) -> None:
        ab, ab_prev, beta = schedule.alpha_bar, schedule.alpha_bar_prev, schedule.betas
        var_x0 = S**2 * (1 - ab) / (ab * S**2 + 1 - ab)
        sigma_sq = schedule.posterior_variance + (ab_prev.sqrt() * beta / (1 - ab)) ** 2 * var_x0
        beta_tilde = schedule.posterior_variance.clone()
        beta_tilde[0] = beta_tilde[1]  # improved-diffusion's clipping at t = 1
        self.frac = (sigma_sq.log() - beta_tilde.log()) / (beta.log() - beta_tilde.log())
        self.alpha_bar, self.parameterization, self.learned = ab, parameterization, learned

    def __call__(self, x_t, t):
        ab = self.alpha_bar[t].reshape(-1, *[1] * (x_t.ndim - 1))
        x0 = MU + ab.sqrt() * S**2 / (ab * S**2 + 1 - ab) * (x_t - ab.sqrt() * MU)
        eps = (x_t - ab.sqrt() * x0) / (1 - ab).sqrt()
        output = {"eps": eps, "x0": x0, "v": ab.sqrt() * eps - (1 - ab).sqrt() * x0}[self.parameterization]
        if not self.learned:
            return output
        raw = (2 * self.frac[t] - 1).reshape(-1, *[1] * (x_t.ndim - 1)).expand_as(x_t)
        return torch.cat([output, raw], dim=1)


def _gaussian_data(batch: int, dims: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """x₀ ~ N(μ, s²) (B, D) in float64 and its exact NLL per sample, nats."""
    x0 = MU + S * torch.randn(batch, dims, generator=torch.Generator().manual_seed(seed), dtype=F64)
    nll = (0.5 * math.log(2 * math.pi * S**2) + (x0 - MU) ** 2 / (2 * S**2)).sum(dim=1)
    return x0, nll


# improved-diffusion's linear schedule for T = 100 (β scaled by 1000/T): ᾱ_T ≈ 2e-5, so N(0, I) is
# q(x_T) up to a gap of ~1e-5 nats per dimension.
SHORT = NoiseSchedule(linear_betas(100, 1e-3, 0.2))


@pytest.fixture
def one_thread():
    """Elementwise float64 work on ~10⁵ values: one thread, as the test machines' cores are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_the_bound_of_the_exact_model_equals_the_datas_nll(one_thread):
    """With p_θ(x_{t−1} | x_t) = q(x_{t−1} | x_t) at every t ≥ 1 (mean and learned variance) and the
    Gaussian decoder for continuous data, p_θ(x_{0:T}) = q(x_{0:T}) up to the prior, so E[L] = −log q(x₀):
    the bound is exact, not only an upper bound. Each term is a one-draw Monte Carlo estimate; over
    32 × 4096 dimensions the mean's standard error is ≈ 0.4% of the NLL (measured: within 0.2% for
    seeds 0, 1, 2)."""
    x0, nll = _gaussian_data(32, 4096)
    denoiser = Parameterized(ExactGaussianNet(SHORT, "v", learned=True), SHORT, "v", learned_variance=True)
    bound = variational_bound(denoiser, SHORT, x0, decoder="continuous")
    assert bound.exact
    assert abs(bound.total.mean().item() / nll.mean().item() - 1) <= 0.01
    # a fixed variance is not the true reverse variance: a strict bound, far above the NLL
    for variance in ("beta", "beta_tilde"):
        fixed = Parameterized(ExactGaussianNet(SHORT, "v", learned=False), SHORT, "v")
        loose = variational_bound(fixed, SHORT, x0[:16], variance=variance, decoder="continuous")
        assert loose.total.mean() > 1.02 * nll[:16].mean()  # measured: 1.047 (β), 2.75 (β̃)


def test_eps_x0_and_v_networks_of_one_model_have_one_bound():
    x0, _ = _gaussian_data(4, 16)
    bounds = [
        variational_bound(Parameterized(ExactGaussianNet(SHORT, p, True), SHORT, p, learned_variance=True),
                          SHORT, x0, decoder="continuous").total
        for p in ("eps", "x0", "v")
    ]  # fmt: skip
    for other in bounds[1:]:
        torch.testing.assert_close(other, bounds[0], rtol=1e-9, atol=1e-9)


def test_sample_i_ignores_the_batch_size():
    x0, _ = _gaussian_data(4, 16)
    denoiser = Parameterized(ExactGaussianNet(SHORT, "eps", True), SHORT, "eps", learned_variance=True)
    seeds = sample_seeds(5, 4)
    whole = variational_bound(denoiser, SHORT, x0, decoder="continuous", seeds=seeds)
    alone = variational_bound(denoiser, SHORT, x0[2:3], decoder="continuous", seeds=seeds[2:3])
    torch.testing.assert_close(alone.terms[0], whole.terms[2], rtol=1e-12, atol=1e-12)


# --- the estimate from fewer terms ---------------------------------------------------------------------


def test_an_estimate_from_fewer_terms_is_flagged_and_close():
    steps, weights = bound_timesteps(1000, 60)
    assert len(steps) <= 60 and steps[0] == 0 and steps[-1] == 999 and weights.sum() == 1000
    assert steps[:8].tolist() == list(range(8))  # dense where the terms are large
    # the weights are the trapezoid rule's: exact for terms linear in t
    linear_terms = 3.0 + 0.25 * torch.arange(1000, dtype=F64)
    assert abs((linear_terms[steps] @ weights).item() - linear_terms.sum().item()) < 1e-9
    x0, _ = _gaussian_data(16, 64)
    denoiser = Parameterized(ExactGaussianNet(SHORT, "eps", True), SHORT, "eps", learned_variance=True)
    full = variational_bound(denoiser, SHORT, x0, decoder="continuous")
    estimate = variational_bound(denoiser, SHORT, x0, decoder="continuous", num_terms=40)
    assert full.exact and not estimate.exact and len(estimate.timesteps) <= 40
    assert abs(estimate.total.mean().item() / full.total.mean().item() - 1) < 0.1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_terms": 1}, r"num_terms=1 is invalid; give an integer ≥ 2, or None for all T terms"),
        ({"variance": "learned"}, r"unknown variance 'learned'; allowed: beta, beta_tilde"),
        ({"decoder": "logistic"}, r"unknown decoder 'logistic'"),
        ({"seeds": [1, 2]}, r"got 2 seeds for a batch of 3; give one per sample"),
    ],
)
def test_bad_arguments_are_refused(kwargs, match):
    denoiser = Parameterized(ToyNet(False), SHORT, "eps")
    with pytest.raises(ValueError, match=match):
        variational_bound(denoiser, SHORT, _eight_bit((3, 4), seed=0), **kwargs)


def test_a_bare_network_and_a_one_step_schedule_are_refused():
    x0 = _eight_bit((3, 4), seed=0)
    with pytest.raises(TypeError, match=r"the denoiser returned Tensor, not a Prediction"):
        variational_bound(lambda x, t, *_: x, SHORT, x0)
    one_step = NoiseSchedule(torch.tensor([0.5], dtype=F64))
    with pytest.raises(ValueError, match=r"the schedule has T=1; the reverse variances at t = 1 need β̃₂"):
        variational_bound(Parameterized(ToyNet(False), one_step, "eps"), one_step, x0)
