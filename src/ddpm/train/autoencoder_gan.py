"""The patch discriminator's side of latent diffusion's first-stage training (Rombach et al. 2022; LDM's
``ldm/models/autoencoder.py``: AutoencoderKL.training_step and configure_optimizers, and
``ldm/modules/losses/contperceptual.py``: LPIPSWithDiscriminator).

LDM alternates two optimizers in every step: the autoencoder's on L_rec + KL + λ·L_G (``optimizer_idx``
0), then the discriminator's on the hinge loss (``optimizer_idx`` 1); ``configure_optimizers`` gives the
discriminator ``Adam(lr, betas=(0.5, 0.9))`` with the autoencoder's learning rate. Here:

- the discriminator's optimizer is that Adam, at the autoencoder's learning rate of each step (the loop's
  warm-up and schedule included); the autoencoder keeps the run's own optimizer (``optim.*``);
- before ``disc_start_steps`` the discriminator neither runs nor steps. LDM multiplies both GAN losses by
  ``disc_factor`` = 0 then, which leaves every weight where it is but still moves BatchNorm's running
  statistics and Adam's step count; skipping leaves the same weights and costs nothing;
- its update reuses the step's reconstructions, detached. Lightning runs the autoencoder again for
  ``optimizer_idx`` 1, after the autoencoder's update and with fresh posterior noise; reusing saves that
  forward, and both updates of a step are computed from the same weights, so their order does not matter;
- the generator's side calls the bare discriminator with its parameters frozen (Lightning's
  ``toggle_optimizer``), so L_G sends gradient to the decoder only. Under torchrun the discriminator's own
  loss is one DistributedDataParallel module (:class:`DiscriminatorHinge`, one forward per backward, as
  Lightning wraps LDM's whole module), so its gradients are averaged over ranks as the autoencoder's are;
- BatchNorm normalises each shard by its own statistics (as LDM does per GPU): with the GAN on, N
  processes or A micro-batches train as one process with the same shards, not as one of the whole batch.

Its checkpoint state lives in the trainer's safetensors file (``discriminator.<name>`` weights and
buffers, ``disc_optimizer.state.<index>.<name>`` Adam moments) and meta.json (``discriminator``: Adam's
settings, skipped steps, the open log interval), so a resumed run continues bit for bit.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from ddpm.nets.discriminator import NLayerDiscriminator
from ddpm.train.autoencoder_loss import AutoencoderLossConfig, hinge_discriminator_loss
from ddpm.train.autoencoder_step import AutoencoderStepResult
from ddpm.train.checkpoint import Checkpoint, optimizer_from_tensors, optimizer_to_tensors
from ddpm.train.config import TrainConfig
from ddpm.train.data_order import mix_seed
from ddpm.train.distributed import BatchPlan, DistContext, all_sum, autocast, ddp_wrap

DISC_BETAS = (0.5, 0.9)  # LDM's configure_optimizers (both of its Adams)
DISC_SEED_SALT = 0xD15C  # the discriminator's initial weights: a seed of their own, from the run's
WEIGHTS_PREFIX, OPTIMIZER_PREFIX = "discriminator.", "disc_optimizer."  # keys in the trainer's file
# log.jsonl's interval means: the discriminator's hinge loss and mean logits (LDM's disc_loss, logits_real,
# logits_fake), the generator's L_G and its weight λ·disc_weight (LDM's g_loss and d_weight)
LOG_FIELDS = ("disc_loss", "logits_real", "logits_fake", "gan_loss", "gan_weight")


class DiscriminatorHinge(nn.Module):
    """The discriminator's objective as one module, so DDP sees one forward per backward: (x, x̂) →
    (per-sample hinge loss (B,), mean real logit, mean fake logit); neither input carries gradient back."""

    def __init__(self, discriminator: NLayerDiscriminator) -> None:
        super().__init__()
        self.discriminator = discriminator

    def forward(self, x: Tensor, recon: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        logits_real = self.discriminator(x.detach())  # (B, 1, h, w); two calls, as LDM: BatchNorm apart
        logits_fake = self.discriminator(recon.detach())
        loss = hinge_discriminator_loss(logits_real, logits_fake)
        return loss, logits_real.detach().float().mean(), logits_fake.detach().float().mean()


@dataclass
class GANTraining:
    """The discriminator, its loss module (DDP-wrapped under torchrun), its Adam, and its log interval."""

    config: AutoencoderLossConfig
    discriminator: NLayerDiscriminator  # this rank's
    hinge: nn.Module  # DiscriminatorHinge, or its DistributedDataParallel wrapper
    optimizer: torch.optim.Adam
    interval: Tensor  # (len(LOG_FIELDS),) sums over the interval's applied discriminator steps
    interval_steps: int = 0
    skipped: int = 0  # discriminator steps skipped for a non-finite loss or gradient, in all

    @classmethod
    def build(cls, config: TrainConfig, ctx: DistContext) -> GANTraining:
        """A fresh discriminator for ``config``'s images on ``ctx.device``; the same on every rank."""
        loss = config.autoencoder_loss
        with torch.random.fork_rng(devices=[]):  # the run's other draws stay those of a run without it
            torch.manual_seed(mix_seed(config.run.seed, DISC_SEED_SALT))
            discriminator = NLayerDiscriminator(
                config.model.in_channels, loss.disc_channels, loss.disc_num_layers
            )
        discriminator = discriminator.to(ctx.device, memory_format=torch.channels_last)
        fast = {"fused": True} if ctx.device.type == "cuda" else {"foreach": True}
        optimizer = torch.optim.Adam(discriminator.parameters(), lr=config.optim.lr, betas=DISC_BETAS, **fast)
        hinge = ddp_wrap(DiscriminatorHinge(discriminator), ctx)
        return cls(loss, discriminator, hinge, optimizer, torch.zeros(len(LOG_FIELDS), device=ctx.device))

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """The discriminator's parameters need no gradient meanwhile (the generator's side of a step)."""
        parameters = list(self.discriminator.parameters())
        for parameter in parameters:
            parameter.requires_grad_(False)
        try:
            yield
        finally:
            for parameter in parameters:
                parameter.requires_grad_(True)

    def step(
        self,
        generator: AutoencoderStepResult,
        lr: float,
        plan: BatchPlan,
        ctx: DistContext,
        precision: str,
        scaler: torch.amp.GradScaler | None = None,
    ) -> None:
        """One update on this rank's shards of the step (hinge loss, the mean over the global batch as the
        autoencoder's); a non-finite loss or gradient skips it and is counted."""
        device = ctx.device
        self.optimizer.zero_grad(set_to_none=True)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        stats = torch.zeros(3, device=device)  # hinge loss, mean real logit, mean fake logit
        last = len(generator.shards) - 1
        for position, (x, recon) in enumerate(generator.shards):
            defer_sync = isinstance(self.hinge, DistributedDataParallel) and position != last
            with self.hinge.no_sync() if defer_sync else contextlib.nullcontext():
                with autocast(precision, device):
                    per_sample, logits_real, logits_fake = self.hinge(x, recon)
                mean = per_sample.float().mean()
                loss = mean / plan.accum_steps
                (loss if scaler is None else scaler.scale(loss)).backward()
            stats += torch.stack([mean.detach(), logits_real, logits_fake]) / plan.accum_steps
        # this rank's means → the global batch's, the same on every rank
        means = all_sum(torch.cat([stats, generator.gan_stats]), ctx) / ctx.world_size
        if scaler is not None:
            scaler.unscale_(self.optimizer)  # the loop's scaler.update() follows the autoencoder's step
        grad_norm = torch.nn.utils.clip_grad_norm_(self.discriminator.parameters(), math.inf, foreach=True)
        if torch.isfinite(means).all() & torch.isfinite(grad_norm):
            if scaler is None:
                self.optimizer.step()
            else:
                scaler.step(self.optimizer)
            self.interval += means
            self.interval_steps += 1
        else:  # never applied: the discriminator's weights and moments stay finite
            self.skipped += 1

    def interval_record(self) -> dict[str, Any]:
        """The means of :data:`LOG_FIELDS` since the last call (NaN if no step applied: logged as null),
        and the skipped steps; starts the next interval."""
        count = self.interval_steps
        means = (self.interval / count).tolist() if count else [math.nan] * len(LOG_FIELDS)
        self.interval.zero_()
        self.interval_steps = 0
        return {**dict(zip(LOG_FIELDS, means, strict=True)), "disc_skipped_steps": self.skipped}

    def state_tensors(self) -> dict[str, Tensor]:
        """Weights and BatchNorm buffers, and Adam's moments, keyed for the trainer's safetensors file."""
        moments, _ = optimizer_to_tensors(self.optimizer.state_dict())
        weights = self.discriminator.state_dict()
        return {**{WEIGHTS_PREFIX + k: v for k, v in weights.items()},
                **{OPTIMIZER_PREFIX + k: v for k, v in moments.items()}}  # fmt: skip

    def state_meta(self) -> dict[str, Any]:
        """Adam's settings and step counts, the skipped steps and the open log interval, for meta.json."""
        _, optimizer = optimizer_to_tensors(self.optimizer.state_dict())
        return {"optimizer": optimizer, "skipped_steps": self.skipped,
                "interval_sums": self.interval.tolist(), "interval_steps": self.interval_steps}  # fmt: skip

    def load_state(self, checkpoint: Checkpoint) -> None:
        """Continue from ``checkpoint``; one without a discriminator (a run resumed with --force after the
        GAN was switched on) leaves this fresh one as it is."""
        meta = checkpoint.meta.get("discriminator")
        if meta is None:
            return
        self.discriminator.load_state_dict(_with_prefix(checkpoint.extra, WEIGHTS_PREFIX))
        moments = _with_prefix(checkpoint.extra, OPTIMIZER_PREFIX)
        self.optimizer.load_state_dict(optimizer_from_tensors(moments, meta["optimizer"]))
        self.skipped, self.interval_steps = meta["skipped_steps"], meta["interval_steps"]
        self.interval = torch.tensor(meta["interval_sums"]).to(self.interval)


def _with_prefix(tensors: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """The tensors whose keys start with ``prefix``, keyed without it."""
    return {key[len(prefix) :]: value for key, value in tensors.items() if key.startswith(prefix)}
