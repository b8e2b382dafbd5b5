"""`ddpm inpaint IMAGE --mask MASK`: fill the masked region of an image (RePaint, by algorithm)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ddpm.command_support import (
    check_count,
    check_guidance_flag,
    check_out,
    open_run,
    read_images,
    read_mask,
    save_npz,
)
from ddpm.editing import inpaint
from ddpm.model import to_uint8


def inpaint_to_files(
    path: str | Path,
    image: str | Path,
    mask: str | Path,
    *,
    n: int = 4,
    steps: int = 250,
    jump_length: int = 10,
    resamples: int = 10,
    seed: int = 0,
    label: int | None = None,
    guidance: float = 1.0,
    out: str | Path = "inpainted.png",
    weights: str = "ema",
    device: str = "auto",
) -> list[Path]:
    """``n`` fills of the image's masked region; .png before/after figure or .npz with ``images`` (uint8)
    and ``mask`` (bool H×W)."""
    out = check_out(out, (".png", ".npz"))
    for flag, value in (
        ("--n", n),
        ("--steps", steps),
        ("--jump-length", jump_length),
        ("--resamples", resamples),
    ):
        check_count(flag, value)
    check_count("--seed", seed, minimum=0)
    check_guidance_flag(guidance)
    model = open_run(path, weights=weights, device=device, images_only=True).model
    originals = read_images([image], model.sample_shape).repeat_interleave(n, dim=0)  # (N·n, C, H, W)
    region = read_mask(mask, model.sample_shape)  # (H, W)
    results = inpaint(
        model, originals, region, steps=steps, jump_length=jump_length, resamples=resamples, seed=seed,
        labels=label, guidance=guidance,
    )  # fmt: skip
    if out.suffix.lower() == ".npz":
        return [save_npz(out, images=to_uint8(results), mask=region.numpy())]
    from ddpm.viz import save_figure
    from ddpm.viz.editing import inpainting_figure

    return [save_figure(inpainting_figure(originals, region, results), out)]


def run(args: argparse.Namespace) -> int:
    """``ddpm inpaint``: print each file written."""
    written = inpaint_to_files(
        args.path, args.image, args.mask, n=args.n, steps=args.steps, jump_length=args.jump_length,
        resamples=args.resamples, seed=args.seed, label=args.label, guidance=args.guidance, out=args.out,
        weights=args.weights, device=args.device,
    )  # fmt: skip
    for path in written:
        print(path)
    return 0
