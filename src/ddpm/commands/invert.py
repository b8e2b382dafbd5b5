"""`ddpm invert`: DDIM-invert images to their x_T and sample them back (DDIM by algorithm, η = 0)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ddpm.command_support import check_count, check_out, open_run, read_images, save_npz
from ddpm.editing import reconstruct
from ddpm.model import to_uint8


def invert_to_files(
    path: str | Path,
    images: Sequence[str | Path],
    *,
    steps: int = 50,
    label: int | None = None,
    out: str | Path = "latents.npz",
    figure: str | Path | None = None,
    weights: str = "ema",
    device: str = "auto",
) -> list[Path]:
    """.npz with ``latents`` (float32 N×C×H×W), ``reconstructions`` (uint8 N×H×W×C) and ``mse`` (per
    image, in [-1, 1] units); ``figure``: the inputs above their reconstructions."""
    out = check_out(out, (".npz",))
    figure = None if figure is None else check_out(figure, (".png", ".pdf", ".svg"), "--figure")
    check_count("--steps", steps)
    model = open_run(path, weights=weights, device=device, images_only=True).model
    originals = read_images(images, model.sample_shape)
    latents, rebuilt = reconstruct(model, originals, steps=steps, labels=label)
    mse = (rebuilt - originals).pow(2).flatten(1).mean(1)
    written = [
        save_npz(
            out,
            latents=latents.numpy().astype(np.float32),
            reconstructions=to_uint8(rebuilt),
            mse=mse.numpy(),
        )
    ]
    if figure is not None:
        from ddpm.viz import save_figure
        from ddpm.viz.editing import reconstruction_figure

        written.append(save_figure(reconstruction_figure(originals, rebuilt), figure))
    return written


def run(args: argparse.Namespace) -> int:
    """``ddpm invert``: print each file written."""
    written = invert_to_files(
        args.path, args.images, steps=args.steps, label=args.label, out=args.out, figure=args.figure,
        weights=args.weights, device=args.device,
    )  # fmt: skip
    for path in written:
        print(path)
    return 0
