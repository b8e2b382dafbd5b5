"""The training data of a control run: every training image with its control, for a ControlNet run (Zhang,
Rao & Agrawala 2023) and a concat run (the control concatenated to a from-scratch U-Net's input) alike.

Controls are computed once per start of a run and kept in memory as uint8 (0 ↔ −1, 255 ↔ +1): exactly
what a control picture saved as a PNG holds, so the branch trains on the values a user's control image
gives it, at a quarter of float32's memory. Canny edges, the slow kind (about 30 s of CPU for MNIST's
60 000 images), are read back from a disk cache under the data root on later starts and --resume
(:mod:`ddpm.train.control_cache`); masks, low-res drafts and gray controls take 1-2 s for all of MNIST and
are computed each time. Users' own controls (``--control folder:PATH``) are read from their files.

Each step draws one more Bernoulli per sample, last (so every other draw is what a plain run draws):
``control.drop_rate`` of the controls are blanked to all −1 (:data:`ddpm.nets.concat_control.BLANK`, what a
concat run's network reads when sampled without control), so the branch (or the concat run's network) also
learns the uncontrolled case; class-label dropout stays, so class, guidance and control combine at sampling
time.
A flipped image gets its control flipped with it.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ddpm.configio import ConfigError
from ddpm.control import ControlConfig, base_net_config, recorded, same_network
from ddpm.data import Dataset
from ddpm.data.controls import control_channels, load_paired_controls, make_control
from ddpm.data.dataset import fingerprint
from ddpm.data.spec import default_data_root
from ddpm.nets.concat_control import BLANK
from ddpm.rundir import read_checkpoint_meta
from ddpm.train.config import TrainConfig, config_to_dict
from ddpm.train.control_cache import cached_controls

CONTROL_BATCH = 512  # images per make_control call while computing the data set's controls
# diffusion settings that fix what the base's network output means; a ControlNet run must share them
BASE_DIFFUSION_KEYS = ("schedule", "num_steps", "parameterization", "learn_variance")


@dataclass(frozen=True, eq=False, repr=False)
class ControlData:
    """A :class:`~ddpm.data.Dataset` of images with one control image each: ``batch`` gives the images as
    usual, ``control_batch`` their controls. Its fingerprint covers the controls too (users' own change)."""

    images: Dataset
    controls: Tensor  # uint8 (N, control channels, H, W)
    drop_rate: float  # P(control blanked) per training sample
    fingerprint: str

    kind = property(lambda self: self.images.kind)
    spec = property(lambda self: self.images.spec)
    labels = property(lambda self: self.images.labels)
    class_names = property(lambda self: self.images.class_names)
    num_classes = property(lambda self: self.images.num_classes)
    skipped = property(lambda self: self.images.skipped)
    sample_shape = property(lambda self: self.images.sample_shape)

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, index: Tensor, device: torch.device | str | None = None) -> Tensor:
        return self.images.batch(index, device)

    def control_batch(
        self, index: Tensor, device: torch.device | str | None = None, *, flip: Tensor | None = None,
        blank: Tensor | None = None,
    ) -> Tensor:  # fmt: skip
        """Controls of rows ``index`` in [-1, 1], mirrored where ``flip`` and all −1 where ``blank`` (B,)."""
        control = self.controls[index].to(device).float().div_(127.5).sub_(1.0)
        if flip is not None:
            control = torch.where(flip[:, None, None, None], control.flip(-1), control)
        if blank is not None:
            control = torch.where(blank[:, None, None, None], torch.full_like(control, BLANK), control)
        return control


def compute_controls(dataset: Dataset, kind: str, log: Callable[[str], Any]) -> Tensor:
    """uint8 controls of ``kind`` for every image of ``dataset``; says how long it took."""
    started = time.perf_counter()
    parts = []
    for start in range(0, len(dataset), CONTROL_BATCH):
        images = dataset.batch(torch.arange(start, min(start + CONTROL_BATCH, len(dataset))))
        parts.append(to_uint8(make_control(kind, images)))
    controls = torch.cat(parts)
    log(f"computed {len(controls)} {kind} controls in {time.perf_counter() - started:.1f}s")
    return controls


def to_uint8(controls: Tensor) -> Tensor:
    """[-1, 1] → uint8 (N, C, H, W), rounding to the nearest level, as a saved control picture holds it."""
    return ((controls.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def check_base_fit(config: TrainConfig, dataset: Dataset, checkpoint: Path) -> None:
    """Refuse data and settings the base was not trained with: its network, its diffusion, its images."""
    base = base_net_config(checkpoint)
    where, spec = config.control.base, config.data.spec
    if config_to_dict(config).get("latent"):
        raise ConfigError(
            "a ControlNet run steers a pixel model; it cannot be a latent run (leave out --latent)"
        )
    if dataset.kind != "images":
        raise ConfigError(f"data {spec!r} is 2-D points; a ControlNet run needs images")
    channels, height, width = dataset.sample_shape
    if (channels, height, width) != (base.in_channels, base.image_size, base.image_size):
        raise ConfigError(
            f"data {spec!r} has {channels}-channel {height}×{width} images; the base run {where!r} was "
            f"trained on {base.in_channels}-channel {base.image_size}×{base.image_size} images"
        )
    classes = dataset.num_classes if config.data.class_conditional else None
    if classes != base.num_classes:
        raise ConfigError(f"data {spec!r} gives {classes or 'no'} classes; the base run {where!r} has "
                          f"{base.num_classes or 'none'} (keep its data.class_conditional)")  # fmt: skip
    if not same_network(config.model, base):
        raise ConfigError(f"model table differs from the base run's ({where!r}); a ControlNet run's network "
                          "is its base's: leave model.* as they are")  # fmt: skip
    ours, theirs = (
        config_to_dict(config)["diffusion"],
        read_checkpoint_meta(checkpoint)["config"]["diffusion"],
    )
    changed = [key for key in BASE_DIFFUSION_KEYS if ours.get(key) != theirs.get(key)]
    if changed:
        raise ConfigError(f"diffusion.{changed[0]} differs from the base run's ({where!r}); a ControlNet run "
                          "keeps its base's forward process")  # fmt: skip


def check_concat_fit(config: TrainConfig, dataset: Dataset) -> ControlConfig:
    """A concat run's control table with users' control folder as an absolute path; refuses (one line) data
    and settings it cannot train on: points, latents."""
    if config_to_dict(config).get("latent"):
        raise ConfigError("a concat control run (--control without --controlnet) trains on pixels; it cannot "
                          "be a latent run (leave out --latent)")  # fmt: skip
    if dataset.kind != "images":
        raise ConfigError(f"data {config.data.spec!r} is 2-D points; a control run needs images")
    folder = config.control.folder
    return dataclasses.replace(config.control, folder=str(Path(folder).resolve()) if folder else "")


def control_training_data(
    config: TrainConfig, dataset: Dataset, log: Callable[[str], Any] = print
) -> tuple[ControlData, TrainConfig]:
    """A control run's data and its config with the control's channels, and for a ControlNet run the base
    recorded (absolute path, EMA weights' sha256). Raises a one-line CheckpointError or ConfigError; writes
    nothing but the cache of Canny controls under the data root (``ddpm.train.control_cache``)."""
    if config.control.concat:
        control = check_concat_fit(config, dataset)
        config = dataclasses.replace(config, control=control)
    else:
        control, checkpoint = recorded(config.control)
        config = dataclasses.replace(config, control=control)
        check_base_fit(config, dataset, checkpoint)
    if control.kind == "folder":
        shape = (control.control_channels, *dataset.sample_shape[1:])
        controls = to_uint8(load_paired_controls(control.folder, shape, image_names(dataset)))
    else:
        try:
            channels = control_channels(control.kind, dataset.sample_shape[0])
            root = config.data.root or default_data_root()
            compute = functools.partial(compute_controls, dataset, control.kind, log)
            controls = cached_controls(dataset, control.kind, root, compute, log)
        except ValueError as err:  # e.g. gray controls of gray images
            raise ConfigError(
                f"control {control.kind!r} does not apply to data {config.data.spec!r}: {err}"
            ) from None
        config = dataclasses.replace(config, control=dataclasses.replace(control, control_channels=channels))
    content = hashlib.sha256(controls.numpy().tobytes()).hexdigest()
    data = ControlData(
        dataset, controls, control.drop_rate, fingerprint("control", dataset.fingerprint, content)
    )
    return data, config


def image_names(dataset: Dataset) -> tuple[str, ...]:
    """Relative names of a data set's images, for pairing users' control images (folder data only)."""
    if dataset.names is not None:
        return dataset.names
    raise ConfigError(
        f"--control folder:PATH pairs control images with the data's by relative name; data {dataset.spec!r} "
        "has no file names (use a folder: data set)"
    )


def preview_controls(dataset: Any, n: int, conditional: bool) -> dict[str, Tensor | None]:
    """Sampling options of previews: a ControlNet run's first ``n`` training images' controls (cycling) and,
    when ``conditional``, their labels; nothing for other runs."""
    if not isinstance(dataset, ControlData):
        return {}
    rows = torch.arange(n) % len(dataset)
    return {"control": dataset.control_batch(rows), "labels": dataset.labels[rows] if conditional else None}
