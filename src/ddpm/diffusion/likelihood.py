"""The variational bound of DDPM (Ho et al. 2020, eq. 5 and §3.3) in nats per sample, and bits/dim.

    L = L_T + Σ_{t>1} L_{t−1} + L_0,
    L_T     = KL(q(x_T | x₀) ‖ N(0, I))                         the prior term,
    L_{t−1} = KL(q(x_{t−1} | x_t, x₀) ‖ p_θ(x_{t−1} | x_t))       t = 2 … T, Gaussian KLs,
    L_0     = −log p_θ(x₀ | x₁)                                  the decoder,

with p_θ(x_{t−1} | x_t) = N(μ̃_t(x̂₀, x_t), Σ_θ): the posterior mean (eq. 7) at the denoiser's x̂₀, whatever
the network predicts, and Σ_θ fixed or learned (``variances``). The decoder is the paper's discretized
Gaussian (eq. 13) for 8-bit data in [−1, 1]: bins ±1/255 around each of the 256 levels, ±∞ at the two
ends; ``continuous`` is the Gaussian density N(x₀; μ_θ(x₁, 1), Σ_θ) instead, for data that is not
quantized (points, latents), where L is a bound on −log density.

The normal CDF is the tanh approximation of Ho et al.'s and improved-diffusion's code, and the log of
every bin's mass is taken of max(mass, 1e-12) (improved-diffusion's ``discretized_gaussian_log_likelihood``),
so the numbers compare with the papers' tables.

Timesteps are 0-based indices (index i is the paper's t = i + 1): the term at index i is L_i, so index 0
is the decoder L_0 and index i ≥ 1 the KL L_i between q(x_i | x_{i+1}, x₀) and p_θ, in the paper's
numbering of x.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ddpm.diffusion.prediction import Denoiser
from ddpm.diffusion.process import q_posterior, q_sample
from ddpm.diffusion.samplers.common import call_denoiser
from ddpm.diffusion.samplers.noise import PerSampleGenerators, sample_seeds
from ddpm.diffusion.schedules import NoiseSchedule
from ddpm.diffusion.variances import check_fixed_variance, reverse_log_variance

DECODERS: tuple[str, ...] = ("discretized", "continuous")
LEVELS = 256  # 8-bit data: x₀ ∈ {−1, −1 + 2/255, …, 1}
HALF_BIN = 1.0 / 255.0  # half the width 2/255 of a bin (Ho et al. eq. 13: δ± = x ± 1/255)
LOG_FLOOR = 1e-12  # the smallest mass whose log is taken (improved-diffusion)


def check_decoder(decoder: str) -> None:
    if decoder not in DECODERS:
        raise ValueError(f"unknown decoder {decoder!r}; allowed: {', '.join(DECODERS)}")


def normal_kl(mean_1: Tensor, log_var_1: Tensor, mean_2: Tensor, log_var_2: Tensor) -> Tensor:
    """KL(N(μ₁, σ₁²) ‖ N(μ₂, σ₂²)) elementwise, nats:
    ½ (log σ₂²/σ₁² + σ₁²/σ₂² + (μ₁ − μ₂)²/σ₂² − 1)."""
    return 0.5 * (log_var_2 - log_var_1 + torch.exp(log_var_1 - log_var_2)
                  + (mean_1 - mean_2).square() * torch.exp(-log_var_2) - 1.0)  # fmt: skip


def approx_standard_normal_cdf(x: Tensor) -> Tensor:
    """Φ(x) ≈ ½ (1 + tanh(√(2/π) (x + 0.044715 x³))), the approximation of Ho et al.'s code."""
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


def check_on_8bit_grid(x0: Tensor) -> None:
    """Refuse x₀ that is not on the 256 levels k/127.5 − 1 (the decoder's bins would not hold it)."""
    levels = (x0.detach().double() + 1) * 127.5  # (B, …), integers 0 … 255 for 8-bit data
    off = (levels - levels.round()).abs()
    if x0.numel() and (levels.min() < -1e-3 or levels.max() > 255 + 1e-3 or off.max() > 1e-3):
        raise ValueError(
            "x0 is not 8-bit data in [-1, 1] (values k/127.5 - 1, k = 0 … 255) as the discretized decoder "
            "needs; use decoder='continuous' for data that is not quantized"
        )


def discretized_gaussian_log_likelihood(x0: Tensor, mean: Tensor, log_variance: Tensor) -> Tensor:
    """log P(x₀) elementwise, nats, under N(mean, σ²) discretized into the 256 bins of 8-bit data (eq. 13).

    The bin of level x is [x − 1/255, x + 1/255], opened to −∞ at x = −1 and to +∞ at x = 1, so the
    masses of the 256 levels sum to 1. ``x0`` must lie on the levels (:func:`check_on_8bit_grid`).
    """
    centred = x0 - mean
    inv_sigma = torch.exp(-0.5 * log_variance)
    cdf_upper = approx_standard_normal_cdf(inv_sigma * (centred + HALF_BIN))  # Φ((x + 1/255 − μ)/σ)
    cdf_lower = approx_standard_normal_cdf(inv_sigma * (centred - HALF_BIN))  # Φ((x − 1/255 − μ)/σ)
    log_below_upper = cdf_upper.clamp(min=LOG_FLOOR).log()  # bin (−∞, −1 + 1/255]
    log_above_lower = (1.0 - cdf_lower).clamp(min=LOG_FLOOR).log()  # bin [1 − 1/255, ∞)
    log_mass = (cdf_upper - cdf_lower).clamp(min=LOG_FLOOR).log()
    lowest, highest = -1.0 + HALF_BIN, 1.0 - HALF_BIN  # between the two end levels and their neighbours
    return torch.where(x0 < lowest, log_below_upper, torch.where(x0 > highest, log_above_lower, log_mass))


def gaussian_log_likelihood(x0: Tensor, mean: Tensor, log_variance: Tensor) -> Tensor:
    """log N(x₀; mean, σ²) elementwise, nats: the decoder for continuous data."""
    return -0.5 * (math.log(2 * math.pi) + log_variance + (x0 - mean).square() * torch.exp(-log_variance))


def decoder_nll(x0: Tensor, mean: Tensor, log_variance: Tensor, decoder: str = "discretized") -> Tensor:
    """L_0 = −log p_θ(x₀ | x₁) per sample (B,), nats, summed over the data dimensions."""
    check_decoder(decoder)
    if decoder == "discretized":
        check_on_8bit_grid(x0)
        log_p = discretized_gaussian_log_likelihood(x0, mean, log_variance)
    else:
        log_p = gaussian_log_likelihood(x0, mean, log_variance)
    return -log_p.flatten(1).sum(dim=1)


def prior_kl(schedule: NoiseSchedule, x0: Tensor) -> Tensor:
    """L_T = KL(q(x_T | x₀) ‖ N(0, I)) per sample (B,), nats, with q(x_T | x₀) = N(√ᾱ_T x₀, (1 − ᾱ_T) I)."""
    last = torch.full((x0.shape[0],), schedule.num_steps - 1, device=x0.device)
    alpha_bar = schedule.at(schedule.alpha_bar, last, x0)  # (B, 1, …)
    zero = torch.zeros((), dtype=x0.dtype, device=x0.device)
    kl = normal_kl(alpha_bar.sqrt() * x0, (1 - alpha_bar).log(), zero, zero)
    return kl.flatten(1).sum(dim=1)


def vlb_terms(
    schedule: NoiseSchedule,
    x0: Tensor,
    x_t: Tensor,
    t: Tensor,
    x0_pred: Tensor,
    log_variance: Tensor,
    *,
    decoder: str = "discretized",
) -> Tensor:
    """The term L_t of eq. 5 at each sample's timestep index ``t`` (B,), nats summed over dimensions (B,).

    x_t ~ q(x_t | x₀) (eq. 4); the model's mean is μ̃_t(x̂₀, x_t) (eq. 7) at the denoiser's ``x0_pred``,
    its variance exp(``log_variance``) (broadcastable to x₀). Index 0 gives the decoder L_0 at x₁,
    index i ≥ 1 the KL L_i (§3.3), as improved-diffusion's ``_vb_terms_bpd`` (there in bits/dim).
    """
    check_decoder(decoder)
    true_mean, _ = q_posterior(schedule, x0, x_t, t)  # μ̃_t(x₀, x_t): (B, …)
    model_mean, _ = q_posterior(schedule, x0_pred, x_t, t)  # μ_θ = μ̃_t(x̂₀, x_t)
    log_variance = log_variance.expand_as(x0)
    first = t == 0  # (B,)
    terms = torch.zeros(x0.shape[0], dtype=x0.dtype, device=x0.device)
    if first.any():
        terms[first] = decoder_nll(x0[first], model_mean[first], log_variance[first], decoder)
    later = ~first
    if later.any():
        true_log_variance = schedule.at(schedule.posterior_variance.log(), t[later], x0[later])  # log β̃_t
        kl = normal_kl(true_mean[later], true_log_variance, model_mean[later], log_variance[later])
        terms[later] = kl.flatten(1).sum(dim=1)
    return terms


def bits_per_dim(nats: Tensor, num_dims: int) -> Tensor:
    """Nats per sample → bits per data dimension: nats / (D ln 2)."""
    if num_dims < 1:
        raise ValueError(f"num_dims={num_dims!r} is invalid; give the number of data dimensions ≥ 1")
    return nats / (num_dims * math.log(2.0))


@dataclass(frozen=True, eq=False)  # tensors have no boolean equality
class VariationalBound:
    """The bound L of eq. 5 for a batch: per sample and per term, float64 nats."""

    prior: Tensor  # (B,) L_T = KL(q(x_T | x₀) ‖ N(0, I))
    terms: Tensor  # (B, K) L_t at ``timesteps``: index 0 the decoder L_0, index i ≥ 1 the KL L_i
    timesteps: Tensor  # (K,) int64 timestep indices evaluated, ascending
    weights: Tensor  # (K,) float64: how many of the T terms each evaluated one stands for (all 1: exact)
    num_dims: int  # D, data dimensions per sample (C·H·W)

    @property
    def exact(self) -> bool:
        """True when every term L_0 … L_{T−1} was evaluated; False for an estimate from fewer."""
        return bool((self.weights == 1).all())

    @property
    def total(self) -> Tensor:
        """L per sample (B,), nats: L_T + Σ_t weight_t · L_t (the exact sum when ``exact``)."""
        return self.prior + self.terms @ self.weights.to(self.terms)

    def bits_per_dim(self) -> Tensor:
        """L per sample (B,) in bits per data dimension (the papers' NLL column)."""
        return bits_per_dim(self.total, self.num_dims)

    def term_bits_per_dim(self) -> Tensor:
        """Each evaluated term's batch mean (K,) in bits/dim, unweighted: the per-term breakdown."""
        return bits_per_dim(self.terms.mean(dim=0), self.num_dims)


def bound_timesteps(num_steps: int, num_terms: int | None = None) -> tuple[Tensor, Tensor]:
    """(timestep indices (K,), weights (K,)) at which :func:`variational_bound` evaluates L_t.

    ``num_terms=None`` (or ≥ T): every index, weight 1: the exact sum. K < T: at most K indices spaced
    geometrically over 0 … T − 1, dense where the terms are large and change fast (L_t falls roughly
    as 1/t), always with the first and the last; the terms between two of them are read off the straight
    line through both (the trapezoid rule), so the weights sum to T. An estimate, and a slight over-
    estimate where L_t is convex.
    """
    valid = isinstance(num_terms, int) and not isinstance(num_terms, bool) and num_terms >= 2
    if num_terms is not None and not valid:
        raise ValueError(f"num_terms={num_terms!r} is invalid; give an integer ≥ 2, or None for all T terms")
    if num_terms is None or num_terms >= num_steps:
        return torch.arange(num_steps), torch.ones(num_steps, dtype=torch.float64)
    grid = torch.logspace(0, math.log10(num_steps), num_terms, dtype=torch.float64).floor().long() - 1
    steps = torch.unique(torch.cat([grid, torch.tensor([0, num_steps - 1])]))  # (K,) ascending
    weights = torch.zeros(len(steps), dtype=torch.float64)
    for j, (start, end) in enumerate(itertools.pairwise(steps.tolist())):
        length = end - start  # the terms start … end − 1, interpolated from the two ends
        weights[j] += (length + 1) / 2
        weights[j + 1] += (length - 1) / 2
    weights[-1] += 1.0  # the last term itself
    return steps, weights


@torch.no_grad()
def variational_bound(
    denoiser: Denoiser,
    schedule: NoiseSchedule,
    x0: Tensor,
    *,
    variance: str = "beta",
    decoder: str = "discretized",
    num_terms: int | None = None,
    seeds: Sequence[int] | None = None,
    cond: dict | None = None,
) -> VariationalBound:
    """The bound L ≥ −log p_θ(x₀) of eq. 5 for data ``x0`` (B, …) under ``denoiser`` (a ``Parameterized``).

    Each term is one draw: x_t ~ q(x_t | x₀) (eq. 4) with per-sample noise from ``seeds`` (default
    ``sample_seeds(0, B)``; so sample i ignores the batch size), drawn for t = T−1 … 0. Σ_θ is the
    denoiser's learned variance (eq. 15) where its Prediction has one, else the fixed ``variance``
    (``beta`` or ``beta_tilde``). ``num_terms`` K < T evaluates at most K terms, geometrically spaced,
    and interpolates the rest (:func:`bound_timesteps`): an estimate, flagged by ``result.exact`` = False.
    ``decoder``: ``discretized`` for 8-bit data, ``continuous`` otherwise. Computed in float64 from the
    network's outputs; the network sees x_t in x₀'s dtype.
    """
    check_decoder(decoder)
    check_fixed_variance(variance)
    if x0.ndim < 2 or not x0.is_floating_point():
        raise ValueError(f"x0 must be a floating tensor (B, …), got {x0.dtype} of shape {tuple(x0.shape)}")
    steps, weights = bound_timesteps(schedule.num_steps, num_terms)
    generators = PerSampleGenerators(sample_seeds(0, x0.shape[0]) if seeds is None else seeds)
    if len(generators) != x0.shape[0]:
        raise ValueError(f"got {len(generators)} seeds for a batch of {x0.shape[0]}; give one per sample")
    x0_64 = x0.double()
    terms = torch.empty(x0.shape[0], len(steps), dtype=torch.float64, device=x0.device)  # (B, K)
    for k in reversed(range(len(steps))):
        t = int(steps[k])
        t_batch = torch.full((x0.shape[0],), t, dtype=torch.int64, device=x0.device)  # (B,)
        x_t = q_sample(schedule, x0, t_batch, generators.randn(x0.shape[1:], x0.device, x0.dtype))
        prediction = call_denoiser(denoiser, x_t, t, float(schedule.alpha_bar[t]), cond)
        frac = None if prediction.variance_frac is None else prediction.variance_frac.double()
        log_variance = reverse_log_variance(schedule, t_batch, x0_64, variance, frac)
        terms[:, k] = vlb_terms(schedule, x0_64, x_t.double(), t_batch, prediction.x0.double(), log_variance,
                                decoder=decoder)  # fmt: skip
    return VariationalBound(prior_kl(schedule, x0_64), terms, steps.to(x0.device), weights.to(x0.device),
                            x0[0].numel())  # fmt: skip
