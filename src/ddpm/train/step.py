"""The gradients of one optimizer step (Algorithm 1) over a global batch split across ranks and micro-steps.

Every random draw of step s for the whole global batch comes from one generator seeded by (run seed, s),
in the same order on every rank and for every split: label dropout, flips, timesteps, noise. A rank
then computes only its shards (:class:`ddpm.train.distributed.BatchPlan`), so the optimisation does
not depend on how many processes or micro-batches share the batch. Dropout masks are the one
per-shard draw, from a seed of (run seed, s, shard); shard 0 keeps the single-process seed.

Importance-sampled t for L_vlb (Nichol & Dhariwal eq. 18) comes from the loop's one
``LossSecondMomentResampler``: its draw replaces the uniform one (the same ``randint`` call until it has
warmed up), each loss is weighted by 1/(T p_t), and every rank records the same unweighted losses of the
whole global batch, so every rank draws the same t at the next step.

A latent run (:class:`ddpm.train.latent_data.LatentData`) draws one more tensor, last: the ε of each
latent's posterior sample z = mean + std · ε (Rombach et al. 2022 train on posterior samples); its flips
pick the encoding of the mirrored image, since flipping a latent is not encoding a flipped image.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from ddpm.data import Dataset
from ddpm.diffusion.losses import DiffusionLoss
from ddpm.diffusion.timestep_sampler import LossSecondMomentResampler
from ddpm.train.config import TrainConfig
from ddpm.train.control_data import ControlData
from ddpm.train.data_order import EpochOrder, mix_seed
from ddpm.train.distributed import BatchPlan, DistContext, all_sum, autocast
from ddpm.train.latent_data import LatentData


@dataclass(frozen=True)
class StepDraws:
    """The random choices of one step for the whole global batch (B items), identical on every rank."""

    index: Tensor  # (B,) data items, from the epoch permutation
    t: Tensor  # (B,) timestep indices in 0..T−1
    noise: Tensor  # (B, *sample_shape) ε ~ N(0, I)
    drop_label: Tensor | None  # (B,) bool: replace the label by "no label" (classifier-free guidance)
    flip: Tensor | None  # (B,) bool: horizontal flip
    t_weight: Tensor | None = None  # (B,) 1/(T p_t) of importance-sampled t; None: uniform t, weight 1
    posterior_noise: Tensor | None = None  # (B, c, h, w) ε of a latent run's posterior samples; else None
    drop_control: Tensor | None = None  # (B,) bool: blank a ControlNet run's control (all −1); else None


def draw_step(
    config: TrainConfig,
    order: EpochOrder,
    step: int,
    dataset: Dataset,
    num_steps: int,
    device: torch.device,
    timestep_sampler: LossSecondMomentResampler | None = None,
) -> StepDraws:
    """All random draws of ``step`` for the global batch, from the generator seeded by (run seed, step);
    t from ``timestep_sampler`` when given (importance sampling), else uniform."""
    generator = torch.Generator(device=device).manual_seed(mix_seed(config.run.seed, step))
    index = order.batch_indices(step)  # (B,)
    batch = index.shape[0]
    drop_label = flip = None
    if config.model.num_classes is not None:
        drop_label = torch.rand(batch, device=device, generator=generator) < config.diffusion.label_dropout
    if config.data.random_flip:
        flip = torch.rand(batch, device=device, generator=generator) < 0.5
    t_weight = None
    if timestep_sampler is None:
        t = torch.randint(0, num_steps, (batch,), generator=generator, device=device)
    else:  # before warm-up the same randint call, and weights 1
        t, t_weight = timestep_sampler.sample(batch, device, generator)
    noise = torch.randn((batch, *dataset.sample_shape), generator=generator, device=device)
    posterior_noise = None
    if isinstance(dataset, LatentData):  # drawn last: a pixel run's draws stay what they always were
        posterior_noise = torch.randn((batch, *dataset.sample_shape), generator=generator, device=device)
    drop_control = None
    if isinstance(dataset, ControlData):  # drawn last: other runs' draws stay what they always were
        drop_control = torch.rand(batch, device=device, generator=generator) < dataset.drop_rate
    return StepDraws(index, t, noise, drop_label, flip, t_weight, posterior_noise, drop_control)


def clean_batch(
    dataset: Dataset | LatentData, index: Tensor, device: torch.device, flip: Tensor | None = None,
    posterior_noise: Tensor | None = None,
) -> Tensor:  # fmt: skip
    """x₀ of rows ``index`` in [-1, 1] (a latent run's: its latents), mirrored where ``flip`` is True."""
    if isinstance(dataset, LatentData):
        return dataset.batch(index, device, flip=flip, noise=posterior_noise)
    x0 = dataset.batch(index, device=device)  # (b, …)
    if flip is not None:
        x0 = torch.where(flip[:, None, None, None], x0.flip(-1), x0)
    return x0


def record_losses(
    timestep_sampler: LossSecondMomentResampler, draws: StepDraws, losses: Tensor, ctx: DistContext
) -> None:
    """Give the sampler the unweighted losses (B,) of the global batch; each rank holds only its shards'
    (zeros elsewhere), so they are summed over ranks first. A step with a non-finite loss (it is skipped)
    records nothing."""
    losses = all_sum(losses, ctx)
    if bool(torch.isfinite(losses).all()):
        timestep_sampler.update(draws.t, losses)


def dropout_seed(seed: int, step: int, shard: int) -> int:
    """Seed of the dropout masks of one shard; shard 0 has the seed a single-process run always used."""
    return mix_seed(seed, step, 0xD0) if shard == 0 else mix_seed(seed, step, 0xD0, shard)


def accumulate_gradients(
    model: nn.Module,
    loss_fn: DiffusionLoss,
    dataset: Dataset,
    draws: StepDraws,
    config: TrainConfig,
    step: int,
    plan: BatchPlan,
    ctx: DistContext,
    precision: str,
    scaler: torch.amp.GradScaler | None = None,
    losses: Tensor | None = None,
) -> Tensor:
    """Forward and backward of this rank's shards; gradients are summed into ``.grad``.

    Each shard's loss is its mean over the shard divided by the accumulation steps, so the summed
    gradients are those of this rank's mean; DDP then averages over ranks (all-reducing on the
    last micro-step only), giving the gradient of the mean loss over the global batch.
    Returns this rank's mean loss (0-dim, detached); average it over ranks for the global mean.
    Importance-sampled t: each per-sample loss is weighted by its 1/(T p_t), and the unweighted ones
    are written into ``losses`` (B,) at the shards' positions of the global batch.
    """
    device = ctx.device
    shards = plan.shards_of(ctx.rank)
    total = torch.zeros((), device=device)
    for position, shard in enumerate(shards):
        part = plan.shard(shard)
        torch.manual_seed(dropout_seed(config.run.seed, step, shard))
        index = draws.index[part]
        x0 = clean_batch(dataset, index, device, None if draws.flip is None else draws.flip[part],
                         None if draws.posterior_noise is None else draws.posterior_noise[part])  # fmt: skip
        cond = {}
        if draws.drop_label is not None:
            labels = dataset.labels[index].to(device)
            cond["class_labels"] = torch.where(draws.drop_label[part], config.model.num_classes, labels)
        if draws.drop_control is not None:  # ControlNet: each image's control, flipped with it, some blank
            flip = None if draws.flip is None else draws.flip[part]
            cond["control"] = dataset.control_batch(index, device, flip=flip, blank=draws.drop_control[part])
        if dataset.kind == "images":
            x0 = x0.contiguous(memory_format=torch.channels_last)
        last = position == len(shards) - 1
        defer_sync = isinstance(model, DistributedDataParallel) and not last
        with model.no_sync() if defer_sync else contextlib.nullcontext():
            with autocast(precision, device):
                per_sample = loss_fn(model, x0, t=draws.t[part], noise=draws.noise[part], **cond)  # (b,)
            if draws.t_weight is not None:
                if losses is not None:
                    losses[part] = per_sample.detach().to(losses.dtype)
                per_sample = per_sample * draws.t_weight[part]
            loss = per_sample.mean() if plan.accum_steps == 1 else per_sample.mean() / plan.accum_steps
            (loss if scaler is None else scaler.scale(loss)).backward()
        total += loss.detach()
    return total
