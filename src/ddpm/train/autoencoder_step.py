"""One optimizer step of latent diffusion's first stage, and the latent normalisation its checkpoints
record (Rombach et al. 2022, §3 and appendix G).

The step is the diffusion step's twin (:mod:`ddpm.train.step`): the global batch and its flips come from
the generator of (run seed, step), the batch is cut into the same shards across ranks and micro-steps,
and image i's posterior noise ε comes from a generator of its own (run seed, step, i), so the
optimisation does not depend on how the batch is split. The loss is
:class:`ddpm.train.autoencoder_loss.AutoencoderLoss` (L_rec + 1e-6 · KL, + λ · L_G once the GAN is on),
averaged over the batch. With the GAN on, the step keeps each shard's images and detached reconstructions
for the discriminator's update that follows (:mod:`ddpm.train.autoencoder_gan`).

Each checkpoint stores, in its meta.json, ``latent_stats``: the per-channel mean and std of posterior
samples z ~ q(z|x) of the EMA autoencoder over up to :data:`STATS_IMAGES` training images. A latent
diffusion run divides by them (``ddpm.nets.latent_codec``) so its data have zero mean and unit variance
per channel, whatever this autoencoder's latents happen to be; never a constant copied from another
autoencoder (Stable Diffusion's 0.18215 fits only Stable Diffusion's VAE).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from ddpm.data import Dataset
from ddpm.nets.autoencoder import AutoencoderKL
from ddpm.nets.latent_codec import latent_statistics
from ddpm.train.autoencoder_loss import AutoencoderLoss
from ddpm.train.config import TrainConfig
from ddpm.train.data_order import EpochOrder, mix_seed
from ddpm.train.distributed import BatchPlan, DistContext, autocast
from ddpm.train.step import clean_batch

STATS_IMAGES = 4096  # training images whose posterior samples estimate the latent normalisation
STATS_BATCH = 256
POSTERIOR_SALT = 0xAE  # separates the posterior noise's seeds from the step's other draws


@dataclass
class AutoencoderStepResult:
    """What one step's forward and backward leave for the loop and for the discriminator's update."""

    loss: Tensor  # this rank's mean loss (0-dim, detached), as accumulate_gradients returns
    shards: list[tuple[Tensor, Tensor]] = field(default_factory=list)  # (x, x̂ detached) per shard; GAN only
    gan_stats: Tensor | None = None  # (2,) this rank's mean L_G and λ·disc_weight; None while the GAN is off


def autoencoder_gradients(
    model: nn.Module,
    loss_fn: AutoencoderLoss,
    dataset: Dataset,
    order: EpochOrder,
    config: TrainConfig,
    step: int,
    plan: BatchPlan,
    ctx: DistContext,
    precision: str,
    scaler: torch.amp.GradScaler | None = None,
    discriminator: nn.Module | None = None,
) -> AutoencoderStepResult:
    """Forward and backward of this rank's shards of step ``step``; gradients summed into ``.grad``.

    ``discriminator`` (its parameters frozen by the caller) adds the GAN term of an active GAN, with λ
    measured per shard at the decoder's last layer (as LDM measures it per GPU).
    """
    device, seed = ctx.device, config.run.seed
    generator = torch.Generator(device=device).manual_seed(mix_seed(seed, step))
    index = order.batch_indices(step)  # (B,)
    flip = None
    if config.data.random_flip:
        flip = torch.rand(index.shape[0], device=device, generator=generator) < 0.5
    shards = plan.shards_of(ctx.rank)
    total = torch.zeros((), device=device)
    gan = discriminator is not None
    gan_terms = dict(discriminator=discriminator, last_layer=_bare(model).decoder.last_layer) if gan else {}
    result = AutoencoderStepResult(total, gan_stats=torch.zeros(2, device=device) if gan else None)
    for position, shard in enumerate(shards):
        part = plan.shard(shard)
        x = clean_batch(dataset, index[part], device, None if flip is None else flip[part])
        x = x.contiguous(memory_format=torch.channels_last)
        generators = [torch.Generator(device=device).manual_seed(mix_seed(seed, step, POSTERIOR_SALT, i))
                      for i in range(part.start, part.stop)]  # fmt: skip
        defer_sync = isinstance(model, DistributedDataParallel) and position != len(shards) - 1
        with model.no_sync() if defer_sync else contextlib.nullcontext():
            with autocast(precision, device):
                recon, posterior = model(x, generator=generators)
                terms = loss_fn(x, recon.float(), posterior, step=step, **gan_terms)
            loss = terms.total.mean() / plan.accum_steps  # terms.total: (b,)
            (loss if scaler is None else scaler.scale(loss)).backward()
        total += loss.detach()
        if result.gan_stats is not None:
            result.shards.append((x, recon.detach().float()))
            weight = torch.tensor(terms.gan_weight, device=device)  # λ·disc_weight of this shard
            result.gan_stats += torch.stack([terms.gan.detach().float().mean(), weight]) / plan.accum_steps
    return result


def _bare(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel wrapper."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def latent_stats_meta(autoencoder: AutoencoderKL, dataset: Dataset, config: TrainConfig) -> dict[str, Any]:
    """``latent_stats`` for a checkpoint's meta.json: the per-channel ``mean`` and ``std`` of posterior
    samples over the first :data:`STATS_IMAGES` images of a fixed shuffle of the training data."""
    device = next(autoencoder.parameters()).device
    seed = config.run.seed
    count = min(STATS_IMAGES, len(dataset))
    rows = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(mix_seed(seed, 0x57A7)))
    generator = torch.Generator(device=device).manual_seed(mix_seed(seed, 0x57A7, 1))
    was_training = autoencoder.training
    autoencoder.eval()
    mean, std = latent_statistics(autoencoder, _batches(dataset, rows[:count], device), generator)
    autoencoder.train(was_training)
    return {"mean": mean, "std": std, "images": count}


def _batches(dataset: Dataset, rows: Tensor, device: torch.device) -> Iterator[Tensor]:
    for start in range(0, len(rows), STATS_BATCH):
        yield dataset.batch(rows[start : start + STATS_BATCH], device=device)
