"""The training objective a config names: L_simple (eq. 14), L_hybrid or L_vlb (Nichol & Dhariwal 2021),
and for L_vlb the importance sampler of t that the loop holds (eq. 18); or, for an autoencoder run, latent
diffusion's first-stage loss (Rombach et al. 2022), with its patch discriminator when the GAN is on. The
loop asks an objective for one step's gradients, for what its checkpoints record beyond the weights (and
restores it), and for its own log fields; everything else (optimizer, EMA, checkpoints, resuming, logging,
DDP) is the same loop for both. The discriminator's update is the objective's own (``train.autoencoder_gan``).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ddpm.data import Dataset
from ddpm.diffusion import make_schedule
from ddpm.diffusion.losses import DiffusionLoss, HybridLoss, VLBLoss
from ddpm.diffusion.schedules import NoiseSchedule
from ddpm.diffusion.timestep_sampler import LossSecondMomentResampler
from ddpm.train.autoencoder_gan import GANTraining
from ddpm.train.autoencoder_loss import AutoencoderLoss
from ddpm.train.autoencoder_step import autoencoder_gradients, latent_stats_meta
from ddpm.train.checkpoint import Checkpoint
from ddpm.train.config import DiffusionConfig, TrainConfig
from ddpm.train.distributed import DistContext
from ddpm.train.step import accumulate_gradients, draw_step, record_losses

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


@dataclass
class DiffusionObjective:
    """Algorithm 1 over the loop's global batch (see :mod:`ddpm.train.step`)."""

    schedule: NoiseSchedule
    loss_fn: DiffusionLoss  # or HybridLoss / VLBLoss
    timestep_sampler: LossSecondMomentResampler | None  # importance-sampled t (L_vlb); None: uniform

    def gradients(self, t: Any) -> Tensor:
        """Zero the gradients, then accumulate this rank's shards of step ``t.step`` (a loop's state)."""
        draws = draw_step(t.config, t.order, t.step, t.dataset, self.schedule.num_steps, t.ctx.device,
                          self.timestep_sampler)  # the global batch  # fmt: skip
        t.optimizer.zero_grad(set_to_none=True)
        losses = None if self.timestep_sampler is None else torch.zeros(len(draws.t), device=t.ctx.device)
        loss = accumulate_gradients(t.net, self.loss_fn, t.dataset, draws, t.config, t.step, t.plan, t.ctx,
                                    t.precision, t.scaler, losses)  # fmt: skip
        if self.timestep_sampler is not None:
            record_losses(self.timestep_sampler, draws, losses, t.ctx)
        return loss

    def checkpoint_meta(self, t: Any) -> dict[str, Any]:
        return {}

    def checkpoint_tensors(self) -> dict[str, Tensor]:
        return {}  # the timestep sampler's tensors have a place of their own in the checkpoint

    def load_state(self, checkpoint: Checkpoint) -> None:
        # a checkpoint without one (resumed with --force): the sampler starts afresh
        if self.timestep_sampler is not None and checkpoint.timestep_sampler:
            self.timestep_sampler.load_state_dict(checkpoint.timestep_sampler)

    def log_fields(self) -> dict[str, Any]:
        return {}


@dataclass
class AutoencoderObjective:
    """L_rec + KL (+ λ·L_G) of latent diffusion's first stage (see :mod:`ddpm.train.autoencoder_step`), and
    the discriminator's update after the autoencoder's gradients when the GAN is on."""

    loss_fn: AutoencoderLoss
    gan: GANTraining | None = None  # the patch discriminator and its optimizer; None: disc_weight 0
    timestep_sampler: None = None

    def gradients(self, t: Any) -> Tensor:
        t.optimizer.zero_grad(set_to_none=True)
        gan = self.gan if self.gan is not None and self.loss_fn.config.gan_active(t.step) else None
        with gan.frozen() if gan is not None else contextlib.nullcontext():  # L_G moves the decoder only
            result = autoencoder_gradients(t.net, self.loss_fn, t.dataset, t.order, t.config, t.step, t.plan,
                                           t.ctx, t.precision, t.scaler,
                                           None if gan is None else gan.discriminator)  # fmt: skip
        if gan is not None:  # LDM's optimizer_idx 1, at the autoencoder's learning rate of this step
            gan.step(result, t.optimizer.param_groups[0]["lr"], t.plan, t.ctx, t.precision, t.scaler)
        return result.loss

    def checkpoint_meta(self, t: Any) -> dict[str, Any]:
        """The latent normalisation of the EMA weights being saved (what latent runs divide by), and the
        discriminator's optimizer settings and counters."""
        meta = {"latent_stats": latent_stats_meta(t.ema.model, t.dataset, t.config)}
        return meta if self.gan is None else {**meta, "discriminator": self.gan.state_meta()}

    def checkpoint_tensors(self) -> dict[str, Tensor]:
        return {} if self.gan is None else self.gan.state_tensors()

    def load_state(self, checkpoint: Checkpoint) -> None:
        if self.gan is not None:
            self.gan.load_state(checkpoint)

    def log_fields(self) -> dict[str, Any]:
        return {} if self.gan is None else self.gan.interval_record()


def build_objective(
    config: TrainConfig, dataset: Dataset, ctx: DistContext | None = None
) -> DiffusionObjective | AutoencoderObjective:
    """The objective of ``config``'s run on ``dataset``, for this rank (``ctx``; one process if None)."""
    if config.is_autoencoder:
        gan = GANTraining.build(config, ctx or DistContext()) if config.autoencoder_loss.disc_weight else None
        return AutoencoderObjective(AutoencoderLoss(config.autoencoder_loss), gan)
    schedule = make_schedule(config.diffusion.schedule, config.diffusion.num_steps)
    return DiffusionObjective(
        schedule,
        build_loss(config.diffusion, schedule, dataset.kind),
        build_timestep_sampler(config.diffusion),
    )
