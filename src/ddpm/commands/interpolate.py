"""`ddpm interpolate`: a strip sampled (deterministic DDIM, by algorithm) from slerps between two noises:
two seeds' x_T, or the DDIM inversions of two images."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ddpm import editing
from ddpm.command_support import (
    UsageError,
    check_count,
    check_guidance_flag,
    check_out,
    open_run,
    read_images,
    save_npz,
)
from ddpm.model import to_uint8


def interpolate_to_files(
    path: str | Path,
    *,
    images: Sequence[str | Path] | None = None,
    seeds: Sequence[int] = (0, 1),
    num: int = 8,
    steps: int = 50,
    label: int | None = None,
    guidance: float = 1.0,
    out: str | Path = "interpolation.png",
    weights: str = "ema",
    device: str = "auto",
) -> list[Path]:
    """A strip between two inverted images (``images``: two files) or two seeds' noises; .png strip or
    .npz with ``images`` (uint8) and ``weights`` (the slerp weight of each image)."""
    out = check_out(out, (".png", ".npz"))
    check_count("--num", num, minimum=2)  # both ends
    check_count("--steps", steps)
    check_guidance_flag(guidance)
    if len(seeds) != 2:
        raise UsageError(f"interpolation needs exactly 2 seeds, got {len(seeds)}")
    for seed in seeds:
        check_count("--seeds", seed, minimum=0)
    model = open_run(path, weights=weights, device=device, images_only=True).model
    if images is not None:
        endpoints = read_images(images, model.sample_shape)
        if len(endpoints) != 2:
            raise UsageError(f"interpolation needs exactly 2 images, got {len(endpoints)}")
        a, b = editing.invert(model, endpoints, steps=steps, labels=label)
    else:
        a, b = editing.noise_for_seed(model, seeds[0]), editing.noise_for_seed(model, seeds[1])
    strip = editing.interpolate(model, a, b, num, steps=steps, labels=label, guidance=guidance)
    if out.suffix.lower() == ".npz":
        return [save_npz(out, images=to_uint8(strip), weights=np.array(editing.interpolation_weights(num)))]
    from ddpm.viz import save_figure
    from ddpm.viz.editing import interpolation_figure

    return [save_figure(interpolation_figure(strip), out)]


def run(args: argparse.Namespace) -> int:
    """``ddpm interpolate``: print each file written."""
    written = interpolate_to_files(
        args.path, images=args.images, seeds=tuple(args.seeds), num=args.num, steps=args.steps,
        label=args.label, guidance=args.guidance, out=args.out, weights=args.weights, device=args.device,
    )  # fmt: skip
    for path in written:
        print(path)
    return 0
