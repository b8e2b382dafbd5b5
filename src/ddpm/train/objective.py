"""The training objective a config names: L_simple (eq. 14), L_hybrid or L_vlb (Nichol & Dhariwal 2021),
and for L_vlb the importance sampler of t that the loop holds (eq. 18)."""

from __future__ import annotations

from ddpm.diffusion.losses import DiffusionLoss, HybridLoss, VLBLoss
from ddpm.diffusion.schedules import NoiseSchedule
from ddpm.diffusion.timestep_sampler import LossSecondMomentResampler
from ddpm.train.config import DiffusionConfig

# L_0's decoder per kind of data: 8-bit images are discrete (Ho et al. eq. 13); points are not.
DECODER_FOR_KIND = {"images": "discretized", "points": "continuous"}


def build_loss(diffusion: DiffusionConfig, schedule: NoiseSchedule, kind: str) -> DiffusionLoss:
    """The per-sample loss of ``diffusion.loss`` for data of ``kind`` (``images`` or ``points``).

    ``simple`` is exactly the loss every run had before learned variances (bit for bit). L_vlb's t is
    never drawn by the loss itself here: the training step draws every t (``train.step.draw_step``).
    """
    gamma = diffusion.min_snr_gamma or None
    if diffusion.loss == "simple":
        return DiffusionLoss(schedule, diffusion.parameterization, gamma)
    decoder = DECODER_FOR_KIND[kind]
    if diffusion.loss == "hybrid":
        return HybridLoss(schedule, diffusion.parameterization, gamma, vlb_weight=diffusion.vlb_weight,
                          decoder=decoder)  # fmt: skip
    return VLBLoss(schedule, diffusion.parameterization, learned_variance=diffusion.learn_variance,
                   decoder=decoder)  # fmt: skip


def build_timestep_sampler(diffusion: DiffusionConfig) -> LossSecondMomentResampler | None:
    """The importance sampler of t for ``importance_sampling`` (L_vlb only), else None (t uniform)."""
    return LossSecondMomentResampler(diffusion.num_steps) if diffusion.importance_sampling else None
