"""One optimizer step of latent diffusion's first stage, and the latent normalisation its checkpoints
record (Rombach et al. 2022, §3 and appendix G).

The step is the diffusion step's twin (:mod:`ddpm.train.step`): the global batch and its flips come from
the generator of (run seed, step), the batch is cut into the same shards across ranks and micro-steps,
and image i's posterior noise ε comes from a generator of its own (run seed, step, i), so the
optimisation does not depend on how the batch is split. The loss is
:class:`ddpm.train.autoencoder_loss.AutoencoderLoss` (L_rec + 1e-6 · KL), averaged over the batch.

Each checkpoint stores, in its meta.json, ``latent_stats``: the per-channel mean and std of posterior
samples z ~ q(z|x) of the EMA autoencoder over up to :data:`STATS_IMAGES` training images. A latent
diffusion run divides by them (``ddpm.nets.latent_codec``) so its data have zero mean and unit variance
per channel, whatever this autoencoder's latents happen to be; never a constant copied from another
autoencoder (Stable Diffusion's 0.18215 fits only Stable Diffusion's VAE).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
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
) -> Tensor:
    """Forward and backward of this rank's shards of step ``step``; gradients summed into ``.grad``.

    Returns this rank's mean loss (0-dim, detached), as :func:`ddpm.train.step.accumulate_gradients`.
    """
    device, seed = ctx.device, config.run.seed
    generator = torch.Generator(device=device).manual_seed(mix_seed(seed, step))
    index = order.batch_indices(step)  # (B,)
    flip = None
    if config.data.random_flip:
        flip = torch.rand(index.shape[0], device=device, generator=generator) < 0.5
    shards = plan.shards_of(ctx.rank)
    total = torch.zeros((), device=device)
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
                per_sample = loss_fn(x, recon.float(), posterior, step=step).total  # (b,)
            loss = per_sample.mean() / plan.accum_steps
            (loss if scaler is None else scaler.scale(loss)).backward()
        total += loss.detach()
    return total


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
