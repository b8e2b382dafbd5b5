"""The training data of a latent diffusion run (Rombach et al. 2022): images encoded once by the frozen
autoencoder, then drawn as normalised latents.

Encoded once, not on the fly: the posterior q(z|x) of every training image (its normalised mean and
std, float32, and those of its mirror image when the run flips) is computed when the run starts and kept
in memory; each step then draws z = mean + std · ε with ε from the step's own generator, exactly the
sample an on-the-fly encoder would draw, at a fraction of the cost: one encoder pass per image (two with
flips) instead of one per image per epoch. Measured in docs/LATENT.md.

Under torchrun the W ranks share the encoding: rank r encodes chunks r, r + W, … of the chunks one process
encodes (the same images per encoder call, so the same numbers), and one all-reduce of the zero-filled
tables gives every rank every latent; each rank then draws its shards of the global batch from them
(:mod:`ddpm.train.step`). Nothing is written to disk, so there is no cache for ranks to race on.

Before anything is written, the autoencoder run is checked: it must exist, be an autoencoder run, still
hold the weights a resumed run was trained on (their sha256), and take the data's images (channels,
size, a size divisible by its factor f). Rank 0 checks it and records the sha256 of the weights it
found; the other ranks open the checkpoint with those weights, so all encode with one autoencoder and
one normalisation even while the autoencoder run is still writing checkpoints.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ddpm.configio import ConfigError
from ddpm.data import Dataset
from ddpm.nets.latent_codec import LatentCodec
from ddpm.rundir import autoencoder_checkpoint, read_checkpoint_meta, read_weights, weights_sha256
from ddpm.train.config import TrainConfig
from ddpm.train.distributed import DistContext, all_sum

ENCODE_BATCH = 256  # images per encoder call while encoding the data set


@dataclass(frozen=True, eq=False, repr=False)
class LatentData:
    """A :class:`~ddpm.data.Dataset` of images seen through a codec: ``batch`` gives normalised latents.

    It answers what the training loop asks of a data set (``kind``, ``sample_shape``, ``labels``,
    ``fingerprint``, ``batch``); ``sample_shape`` is the latents' (c, h, w), ``image_shape`` the images'.
    """

    images: Dataset  # the pixel data
    codec: LatentCodec  # the frozen autoencoder and normalisation (previews decode with it)
    mean: Tensor | None = None  # (N, c, h, w) normalised posterior means; None until encode_dataset
    std: Tensor | None = None  # (N, c, h, w) normalised posterior stds
    mirrored: tuple[Tensor, Tensor] | None = None  # (mean, std) of the flipped images, when the run flips

    kind = property(lambda self: self.images.kind)
    spec = property(lambda self: self.images.spec)
    labels = property(lambda self: self.images.labels)
    class_names = property(lambda self: self.images.class_names)
    num_classes = property(lambda self: self.images.num_classes)
    fingerprint = property(lambda self: self.images.fingerprint)  # the images': resuming checks them
    skipped = property(lambda self: self.images.skipped)
    image_shape = property(lambda self: self.images.sample_shape)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return self.codec.latent_shape(self.images.sample_shape)

    def batch(
        self, index: Tensor, device: torch.device | str | None = None, *, flip: Tensor | None = None,
        noise: Tensor | None = None,
    ) -> Tensor:  # fmt: skip
        """Latents of rows ``index``: z = mean + std · ``noise`` (the posterior means without noise), of the
        mirrored image where ``flip`` (B,) is True."""
        assert self.mean is not None and self.std is not None, "encode_dataset first"
        mean, std = self.mean[index], self.std[index]
        if flip is not None:
            assert self.mirrored is not None, "flips need the mirrored encodings (data.random_flip)"
            where = flip.cpu()[:, None, None, None]
            mean = torch.where(where, self.mirrored[0][index], mean)
            std = torch.where(where, self.mirrored[1][index], std)
        mean, std = mean.to(device), std.to(device)
        return mean if noise is None else mean + std * noise


def open_autoencoder(config: TrainConfig) -> tuple[LatentCodec, TrainConfig]:
    """The codec of ``config.latent``'s autoencoder run, and the config with its absolute path and weights'
    sha256 recorded. Raises a one-line CheckpointError or ConfigError; reads, never writes."""
    latent = config.latent
    checkpoint = autoencoder_checkpoint(latent.autoencoder, latent.autoencoder_sha256)
    codec = LatentCodec.from_checkpoint(
        checkpoint, read_checkpoint_meta(checkpoint), read_weights(checkpoint)
    )
    recorded = dataclasses.replace(
        latent,
        autoencoder=str(Path(latent.autoencoder).resolve()),
        autoencoder_sha256=weights_sha256(checkpoint),
    )
    return codec, dataclasses.replace(config, latent=recorded)


def join_autoencoder(config: TrainConfig, path: str, sha256: str, ctx: DistContext) -> TrainConfig:
    """A rank other than 0: ``config`` naming the autoencoder rank 0 checked (its absolute ``path`` and the
    ``sha256`` of the weights it found), so every rank opens the same checkpoint."""
    if not Path(path).is_dir():
        raise ConfigError(
            f"rank {ctx.rank} cannot see autoencoder run {path!r}, which rank 0 encodes with; the "
            "autoencoder run must be on a file system every node shares"
        )
    recorded = dataclasses.replace(config.latent, autoencoder=path, autoencoder_sha256=sha256)
    return dataclasses.replace(config, latent=recorded)


def check_images_fit(codec: LatentCodec, dataset: Dataset, config: TrainConfig) -> None:
    """Refuse data the autoencoder was not trained on: points, other channels, another image size."""
    ae, where = codec.autoencoder.config, config.latent.autoencoder
    spec = config.data.spec
    if dataset.kind != "images":
        raise ConfigError(f"data {spec!r} is 2-D points; latent diffusion needs images")
    channels, height, width = dataset.sample_shape
    f = ae.downsample_factor
    if height % f or width % f:
        raise ConfigError(
            f"data {spec!r} has {height}×{width} images, not divisible by the autoencoder's downsample "
            f"factor {f} ({where}); set data.image_size to a multiple of {f}"
        )
    if channels != ae.in_channels or (height, width) != (ae.image_size, ae.image_size):
        raise ConfigError(
            f"data {spec!r} has {channels}-channel {height}×{width} images; the autoencoder in {where} "
            f"was trained on {ae.in_channels}-channel {ae.image_size}×{ae.image_size} images (set "
            "data.channels / data.image_size to match, or train an autoencoder on this data)"
        )


@torch.no_grad()
def encode_dataset(
    latent: LatentData, ctx: DistContext, *, mirrored: bool, log: Callable[[str], Any]
) -> LatentData:
    """``latent`` with every image encoded (and its mirror image when ``mirrored``), the chunks of
    :data:`ENCODE_BATCH` images dealt out to the ranks in turn; says how long it took. Every rank calls it."""
    started = time.perf_counter()
    images, device = latent.images, ctx.device
    codec = latent.codec.to(device)
    views = [False, True] if mirrored else [False]
    encoded = []
    for flip in views:
        # zeros where other ranks encode: the all-reduce adds exact zeros to each rank's own rows
        mean, std = (torch.zeros((len(images), *latent.sample_shape), device=device) for _ in range(2))
        starts = range(0, len(images), ENCODE_BATCH)
        for start in starts[ctx.rank :: ctx.world_size]:
            rows = torch.arange(start, min(start + ENCODE_BATCH, len(images)))
            x = images.batch(rows, device=device)
            mean[start : start + len(rows)], std[start : start + len(rows)] = codec.posterior(
                x.flip(-1) if flip else x
            )
        encoded.append((all_sum(mean, ctx).cpu(), all_sum(std, ctx).cpu()))
    done = LatentData(images, codec, *encoded[0], mirrored=encoded[1] if mirrored else None)
    shared = f" on {ctx.world_size} processes" if ctx.distributed else ""
    seconds = time.perf_counter() - started
    log(f"encoded {len(images) * len(views)} images to latents {done.sample_shape}{shared} in {seconds:.1f}s")
    return done


def latent_training_data(config: TrainConfig, dataset: Dataset) -> tuple[LatentData, TrainConfig]:
    """A latent run's data, not yet encoded (:func:`encode_dataset` does that, on every rank), and its config
    with the autoencoder recorded (path, weights' sha256). Checks; writes nothing."""
    codec, config = open_autoencoder(config)
    check_images_fit(codec, dataset, config)
    return LatentData(dataset, codec), config
