"""The training objectives: DDPM's (Algorithm 1, eq. 14) for ε, x₀ and v targets, with min-SNR-γ weighting,
and for learned variances Improved DDPM's L_hybrid and L_vlb (Nichol & Dhariwal 2021, §3)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from ddpm.diffusion.likelihood import bits_per_dim, check_decoder, vlb_terms
from ddpm.diffusion.process import (
    Parameterization,
    check_parameterization,
    predict_x0_eps,
    q_sample,
    training_target,
)
from ddpm.diffusion.schedules import NoiseSchedule
from ddpm.diffusion.timestep_sampler import LossSecondMomentResampler
from ddpm.diffusion.variances import (
    check_fixed_variance,
    posterior_log_variance_clipped,
    reverse_log_variance,
    split_variance_channels,
    variance_frac_from_output,
)


def min_snr_weights(schedule: NoiseSchedule, parameterization: Parameterization, gamma: float) -> Tensor:
    """Min-SNR-γ loss weights per timestep (Hang et al. 2023, eq. 9 and §3.4), float64, shape (T,).

    The weight makes every target's loss equal min(SNR, γ)·‖x₀ − x̂₀‖², because
    ‖ε − ε̂‖² = SNR·‖x₀ − x̂₀‖² and ‖v − v̂‖² = (SNR + 1)·‖x₀ − x̂₀‖².
    """
    check_parameterization(parameterization)
    _check_gamma(gamma)
    snr = schedule.snr  # (T,)
    clipped = snr.clamp(max=gamma)
    if parameterization == "eps":
        return clipped / snr
    if parameterization == "x0":
        return clipped
    return clipped / (snr + 1)


def _check_gamma(gamma: float) -> None:
    if (
        isinstance(gamma, bool)
        or not isinstance(gamma, (int, float))
        or not math.isfinite(gamma)
        or gamma <= 0
    ):
        raise ValueError(f"min_snr_gamma={gamma!r} is invalid; it must be a finite number > 0 (or None)")


def check_output_shape(prediction: Tensor, target: Tensor) -> None:
    if prediction.shape != target.shape:
        # Broadcasting here would silently train on the wrong objective.
        raise ValueError(
            f"model output has shape {tuple(prediction.shape)}; it must match x0's {tuple(target.shape)}"
        )


class DiffusionLoss:
    """Algorithm 1 with the simple loss of eq. 14: t ~ U{0..T−1}, ε ~ N(0, I), ‖target − model(x_t, t)‖².

    Returns the mean over non-batch dimensions, one value per sample (shape (B,)); the caller reduces.
    ``parameterization`` chooses the target (ε as in the paper, x₀, or v of Salimans & Ho 2022);
    ``min_snr_gamma`` turns on min-SNR-γ weighting (Hang et al. 2023), None keeps eq. 14 unweighted.
    """

    def __init__(
        self,
        schedule: NoiseSchedule,
        parameterization: Parameterization = "eps",
        min_snr_gamma: float | None = None,
    ) -> None:
        check_parameterization(parameterization)
        self.schedule = schedule
        self.parameterization = parameterization
        self.min_snr_gamma = min_snr_gamma
        # Per-timestep weights, float64 on the CPU: ones for eq. 14, min-SNR-γ otherwise.
        if min_snr_gamma is None:
            self.weights = torch.ones(schedule.num_steps, dtype=torch.float64)
        else:
            self.weights = min_snr_weights(schedule, parameterization, min_snr_gamma)
        self._weights_by_device: dict[torch.device, Tensor] = {}

    def weights_on(self, device: torch.device | str) -> Tensor:
        """The per-timestep weights as a float32 tensor on ``device``, made once and then cached."""
        device = torch.device(device)
        if device not in self._weights_by_device:
            self._weights_by_device[device] = self.weights.to(device=device, dtype=torch.float32)
        return self._weights_by_device[device]

    def __call__(
        self,
        model: Callable[..., Tensor],
        x0: Tensor,
        *,
        t: Tensor | None = None,
        noise: Tensor | None = None,
        generator: torch.Generator | None = None,
        **cond: object,
    ) -> Tensor:
        """Per-sample loss (B,) for data ``x0`` (B, …); ``t`` (B,) and ``noise`` (like x0) are drawn if None.

        Draws use ``generator`` when given (it must live on x0's device), else the global RNG.
        ``cond`` is passed to the model unchanged, as ``model(x_t, t, **cond)``.
        """
        t, noise = self._draws(x0, t, noise, generator)  # (B,) int64, (B, …)
        x_t = q_sample(self.schedule, x0, t, noise)  # (B, …), eq. 4
        alpha_bar = self.schedule.at(self.schedule.alpha_bar, t, x0)  # (B, 1, …)
        target = training_target(x0, noise, alpha_bar, self.parameterization)
        prediction = model(x_t, t, **cond)
        check_output_shape(prediction, target)
        return self._simple(prediction, target, t)

    def _draws(
        self, x0: Tensor, t: Tensor | None, noise: Tensor | None, generator: torch.Generator | None
    ) -> tuple[Tensor, Tensor]:
        """(t (B,), ε like x0) of Algorithm 1: drawn where None (t first), else checked."""
        if x0.ndim < 2:
            raise ValueError(
                f"x0 has shape {tuple(x0.shape)}; it needs a batch dimension and data dims (B, …)"
            )
        if generator is not None and generator.device.type != x0.device.type:
            raise ValueError(f"generator is on {generator.device} but x0 is on {x0.device}; they must match")
        t = self._timesteps(t, x0.shape[0], x0.device, generator)  # (B,) int64
        if noise is None:
            noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        elif noise.shape != x0.shape:
            raise ValueError(f"noise has shape {tuple(noise.shape)}; it must match x0's {tuple(x0.shape)}")
        return t, noise

    def _simple(self, prediction: Tensor, target: Tensor, t: Tensor) -> Tensor:
        """Eq. 14's ‖target − prediction‖², mean over data dims, times the timestep's weight: (B,)."""
        error = prediction - target
        if error.dtype in (torch.float16, torch.bfloat16):
            error = error.float()  # squares of half-precision errors lose the small values that matter
        per_sample = error.square().flatten(1).mean(dim=1)  # (B,)
        return per_sample * self.weights_on(target.device)[t]

    def _timesteps(
        self, t: Tensor | None, batch: int, device: torch.device, generator: torch.Generator | None
    ) -> Tensor:
        """Draw t ~ U{0..T−1} per sample, or check the given t: shape (B,), integers in range."""
        num_steps = self.schedule.num_steps
        if t is None:
            return torch.randint(0, num_steps, (batch,), generator=generator, device=device)
        if t.shape != (batch,):
            raise ValueError(f"t has shape {tuple(t.shape)}; it must be ({batch},), one timestep per sample")
        if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            raise ValueError(f"t has dtype {t.dtype}; it must hold integer timestep indices")
        if batch and (int(t.min()) < 0 or int(t.max()) >= num_steps):
            bad = t[(t < 0) | (t >= num_steps)][0].item()
            raise ValueError(f"t contains {bad}; timesteps must lie in 0..{num_steps - 1}")
        return t.to(device=device, dtype=torch.int64)


def vlb_bits_per_dim(
    schedule: NoiseSchedule,
    parameterization: Parameterization,
    x0: Tensor,
    x_t: Tensor,
    t: Tensor,
    prediction: Tensor,
    variance_frac: Tensor | None,
    *,
    variance: str = "beta",
    decoder: str = "discretized",
) -> Tensor:
    """L_t of eq. 5 per sample (B,) in bits/dim for a network's ε/x₀/v ``prediction`` at x_t (improved-
    diffusion's ``_vb_terms_bpd`` without clipping): Σ_θ learned from ``variance_frac``, else ``variance``."""
    if prediction.dtype in (torch.float16, torch.bfloat16):
        prediction = prediction.float()  # the KL's log-variance differences need more than half precision
        variance_frac = None if variance_frac is None else variance_frac.float()
    x0, x_t = x0.to(prediction.dtype), x_t.to(prediction.dtype)
    alpha_bar = schedule.at(schedule.alpha_bar, t, x0)  # (B, 1, …)
    x0_pred, _ = predict_x0_eps(x_t, prediction, alpha_bar, parameterization)
    log_variance = reverse_log_variance(schedule, t, x0, variance, variance_frac)
    nats = vlb_terms(schedule, x0, x_t, t, x0_pred, log_variance, decoder=decoder)  # (B,)
    return bits_per_dim(nats, x0[0].numel())


def _check_vlb_weight(vlb_weight: float) -> None:
    if (
        isinstance(vlb_weight, bool)
        or not isinstance(vlb_weight, (int, float))
        or not (math.isfinite(vlb_weight) and vlb_weight >= 0)
    ):
        raise ValueError(f"vlb_weight={vlb_weight!r} is invalid; it must be a finite number ≥ 0 (λ = 0.001)")


class HybridLoss(DiffusionLoss):
    """L_hybrid = L_simple + λ L_vlb (Nichol & Dhariwal 2021, §3.1, eq. 16) for a learned-variance network.

    The network outputs (B, 2C, …): its ε/x₀/v prediction, then the variance channels r of eq. 15
    (v = (r + 1)/2). L_simple is :class:`DiffusionLoss`'s on the prediction (eq. 14, min-SNR-γ if
    given); L_vlb is estimated per sample as T·L_t in bits/dim at the drawn t, with a stop-gradient on the
    prediction, so L_vlb trains the variance only (improved-diffusion's ``frozen_out`` and
    ``RESCALED_MSE``: vb · T/1000 = λ·T·L_t with λ = ``vlb_weight`` = 0.001). Returns (B,).
    """

    def __init__(
        self,
        schedule: NoiseSchedule,
        parameterization: Parameterization = "eps",
        min_snr_gamma: float | None = None,
        *,
        vlb_weight: float = 0.001,
        decoder: str = "discretized",
    ) -> None:
        super().__init__(schedule, parameterization, min_snr_gamma)
        _check_vlb_weight(vlb_weight)
        check_decoder(decoder)
        posterior_log_variance_clipped(schedule)  # refuses T = 1 now, not at the first step
        self.vlb_weight = float(vlb_weight)
        self.decoder = decoder

    def __call__(
        self,
        model: Callable[..., Tensor],
        x0: Tensor,
        *,
        t: Tensor | None = None,
        noise: Tensor | None = None,
        generator: torch.Generator | None = None,
        **cond: object,
    ) -> Tensor:
        """Per-sample L_simple + λ·T·L_t (B,); arguments as for :meth:`DiffusionLoss.__call__`."""
        t, noise = self._draws(x0, t, noise, generator)  # (B,), (B, …)
        x_t = q_sample(self.schedule, x0, t, noise)  # eq. 4
        alpha_bar = self.schedule.at(self.schedule.alpha_bar, t, x0)  # (B, 1, …)
        prediction, raw = split_variance_channels(model(x_t, t, **cond), x0)  # (B, C, …) each
        simple = self._simple(prediction, training_target(x0, noise, alpha_bar, self.parameterization), t)
        vlb = vlb_bits_per_dim(self.schedule, self.parameterization, x0, x_t, t, prediction.detach(),
                               variance_frac_from_output(raw), decoder=self.decoder)  # fmt: skip
        return simple + self.vlb_weight * self.schedule.num_steps * vlb


class VLBLoss(DiffusionLoss):
    """L_vlb itself (Ho et al. eq. 5; Nichol & Dhariwal §3.3): T·L_t per sample in bits/dim at the drawn t.

    ``learned_variance=True``: the network outputs (B, 2C, …) as for :class:`HybridLoss`, and L_vlb trains
    both halves (no stop-gradient); False: a prediction of x's shape with the fixed ``variance`` (Ho et al.
    Table 2's "L, fixed isotropic Σ" rows). ``timestep_sampler`` (a ``LossSecondMomentResampler``): t is
    drawn from its p_t and each loss multiplied by 1/(T p_t), and the unweighted T·L_t recorded with
    ``update`` (improved-diffusion's ``RESCALED_KL`` with ``loss-second-moment``); a ``t`` given by the
    caller is used as is, unweighted and unrecorded. Returns (B,).
    """

    def __init__(
        self,
        schedule: NoiseSchedule,
        parameterization: Parameterization = "eps",
        *,
        learned_variance: bool = True,
        variance: str = "beta",
        decoder: str = "discretized",
        timestep_sampler: LossSecondMomentResampler | None = None,
    ) -> None:
        super().__init__(schedule, parameterization)
        check_fixed_variance(variance)
        check_decoder(decoder)
        posterior_log_variance_clipped(schedule)  # refuses T = 1
        if timestep_sampler is not None and timestep_sampler.num_steps != schedule.num_steps:
            raise ValueError(
                f"timestep_sampler has T={timestep_sampler.num_steps} but the schedule {schedule.num_steps}"
            )
        self.learned_variance, self.variance, self.decoder = learned_variance, variance, decoder
        self.timestep_sampler = timestep_sampler

    def __call__(
        self,
        model: Callable[..., Tensor],
        x0: Tensor,
        *,
        t: Tensor | None = None,
        noise: Tensor | None = None,
        generator: torch.Generator | None = None,
        **cond: object,
    ) -> Tensor:
        """Per-sample T·L_t (B,), importance-weighted when t was drawn by ``timestep_sampler``."""
        weights = None
        if t is None and self.timestep_sampler is not None:
            t, weights = self.timestep_sampler.sample(x0.shape[0], x0.device, generator)
        t, noise = self._draws(x0, t, noise, generator)
        x_t = q_sample(self.schedule, x0, t, noise)  # eq. 4
        output = model(x_t, t, **cond)
        variance_frac = None
        if self.learned_variance:
            output, raw = split_variance_channels(output, x0)
            variance_frac = variance_frac_from_output(raw)
        else:
            check_output_shape(output, x0)
        loss = self.schedule.num_steps * vlb_bits_per_dim(
            self.schedule, self.parameterization, x0, x_t, t, output, variance_frac,
            variance=self.variance, decoder=self.decoder,
        )  # fmt: skip
        if weights is None:
            return loss
        self.timestep_sampler.update(t, loss.detach())
        return loss * weights.to(loss.dtype)
