"""`ddpm sample`: draw samples from a run and write a PNG grid, an .npz file and/or a GIF."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ddpm.diffusion.eps_scaling import check_eps_scale
from ddpm.diffusion.samplers import spacings_for
from ddpm.pipeline import load, to_uint8
from ddpm.train.loop import resolve_device

OUTPUT_SUFFIXES = (".png", ".npz")


def check_eps_scale_flag(eps_scale: float) -> None:
    """Refuse a bad ``--eps-scale`` in the flag's own words (see ``ddpm.diffusion.eps_scaling``)."""
    try:
        check_eps_scale(eps_scale)
    except ValueError:
        raise ValueError(
            f"--eps-scale {eps_scale!r} is invalid; give a finite number > 0 (1 = off)"
        ) from None


def sampler_options(
    sampler: str, eta: float = 0.0, spacing: str | None = None, eps_scale: float = 1.0
) -> dict:
    """`ddpm sample`'s ``--eta``, ``--spacing`` and ``--eps-scale`` as sampling keyword arguments."""
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"--eta {eta} is outside [0, 1]")
    if eta and sampler != "ddim":
        raise ValueError(f"--eta applies to the ddim sampler only, not {sampler!r}")
    check_eps_scale_flag(eps_scale)
    options: dict = {"eta": eta} if sampler == "ddim" else {}
    if eps_scale != 1:
        options["eps_scale"] = eps_scale
    if spacing is None:
        return options
    if spacing not in spacings_for(sampler):
        choices = ", ".join(spacings_for(sampler))
        raise ValueError(f"--spacing {spacing!r} is not allowed for the {sampler} sampler; choose {choices}")
    return {**options, "spacing": spacing}


def sample_to_files(
    path: str | Path,
    *,
    n: int = 64,
    sampler: str = "ddim",
    steps: int | None = None,
    eta: float = 0.0,
    spacing: str | None = None,
    eps_scale: float = 1.0,
    seed: int = 0,
    batch_size: int = 256,
    out: str | Path = "samples.png",
    gif: str | Path | None = None,
    weights: str = "ema",
    device: str = "auto",
) -> list[Path]:
    """Sample ``n`` images (or points) and write them; returns the files written."""
    out = Path(out)
    if out.suffix.lower() not in OUTPUT_SUFFIXES:
        raise ValueError(f"--out {str(out)!r} must end in .png or .npz")
    if gif is not None and Path(gif).suffix.lower() != ".gif":
        raise ValueError(f"--gif {str(gif)!r} must end in .gif")
    options = sampler_options(sampler, eta, spacing, eps_scale)
    model = load(path, weights=weights, device=resolve_device(device))
    if gif is not None:
        options["trajectory_steps"] = "all"
    results = model.sample_with_result(
        n, sampler=sampler, steps=steps, seed=seed, batch_size=batch_size, **options
    )
    samples = torch.cat([r.samples.cpu() for r in results])
    out.parent.mkdir(parents=True, exist_ok=True)
    written = [out]
    if out.suffix.lower() == ".npz":
        if model.kind == "images":
            np.savez_compressed(out, images=to_uint8(samples))
        else:
            np.savez_compressed(out, points=samples.numpy().astype(np.float32))
    elif model.kind == "images":
        from ddpm.viz.grid import save_grid

        save_grid(samples, out)
    else:
        from ddpm.viz.scatter import save_scatter

        save_scatter(samples, out)
    if gif is not None:
        from ddpm.viz.animate import save_reverse_gif

        save_reverse_gif(results[0].trajectory, gif)
        written.append(Path(gif))
    return written
