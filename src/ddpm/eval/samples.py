"""Samples as evaluation takes them: a samples .npz, uint8 NHWC images, or float tensors in [-1, 1]."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor


def load_samples_npz(path: str | Path) -> tuple[Tensor, Tensor | None]:
    """Read a samples file: `images` uint8 (N, H, W, C) or `points` float32 (N, 2), optional `labels`.

    Returns images as float32 (N, C, H, W) in [-1, 1] (or the points as stored) and int64 labels or None.
    Nothing is unpickled (allow_pickle=False).
    """
    with np.load(path, allow_pickle=False) as npz:
        arrays = {key: npz[key] for key in npz.files}
    present = [key for key in ("images", "points") if key in arrays]
    if len(present) != 1:
        raise ValueError(f"{path} must hold exactly one of 'images' or 'points'; it holds {sorted(arrays)}")
    samples = to_eval_tensor(torch.from_numpy(arrays[present[0]]))
    labels = arrays.get("labels")
    if labels is not None and labels.shape != (samples.shape[0],):
        raise ValueError(f"{path}: labels have shape {labels.shape}, expected ({samples.shape[0]},)")
    return samples, None if labels is None else torch.from_numpy(labels.astype(np.int64))


def to_eval_tensor(samples: Tensor) -> Tensor:
    """uint8 images (N, H, W, C) → float32 (N, C, H, W) in [-1, 1]; float images are clamped to [-1, 1] and
    rounded to the 8-bit grid, as saving them would, so in-memory samples score the same as their saved
    .npz; float points (N, 2) pass through as float32.
    """
    if samples.dtype == torch.uint8:
        if samples.ndim != 4 or samples.shape[-1] not in (1, 3):
            raise ValueError(
                f"uint8 images must be (N, H, W, C) with C in (1, 3); got shape {tuple(samples.shape)}"
            )
        return samples.permute(0, 3, 1, 2).float().div(127.5).sub(1.0).contiguous()
    if not samples.is_floating_point():
        raise ValueError(f"samples must be uint8 images or float tensors; got {samples.dtype}")
    samples = samples.detach().float().cpu()
    if samples.ndim == 2:
        return samples
    if samples.ndim != 4:
        raise ValueError(
            f"samples must be images (N, C, H, W) or points (N, 2); got shape {tuple(samples.shape)}"
        )
    return ((samples.clamp(-1, 1) + 1) * 127.5).round().div(127.5).sub(1.0)
