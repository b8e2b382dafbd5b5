"""`ddpm viz`: pictures of a run — forward and reverse process strips, a GIF of the reverse process,
training curves and schedule plots."""

from __future__ import annotations

import argparse
from pathlib import Path

from ddpm.command_support import UsageError, gather, open_run
from ddpm.rundir import RunDir

VIZ_KINDS = ("forward", "reverse", "gif", "curves", "schedule", "all")


def draw_pictures(
    run_dir: str | Path, kind: str = "all", out_dir: str | Path | None = None, *, device: str = "auto"
) -> list[Path]:
    """Write the run's figures as PNG/GIF into ``out_dir`` (default RUN_DIR/figures); the process
    pictures sample 16 images with the run's own sampler."""
    from ddpm import viz

    if kind not in VIZ_KINDS:
        raise UsageError(f"unknown picture {kind!r}; allowed: {', '.join(VIZ_KINDS)}")
    out = Path(out_dir) if out_dir is not None else RunDir(run_dir).figures_dir
    written: list[Path] = []
    if kind in ("curves", "schedule", "all"):
        written += viz.save_run_curves(run_dir, out)
    if kind in ("forward", "reverse", "gif", "all"):
        pictures = gather(open_run(run_dir, device=device), n=16)
        if kind in ("forward", "all"):
            strip = viz.forward_strip(pictures.real, pictures.model.schedule)
            written.append(viz.save_figure(strip, out / "forward.png"))
        if kind in ("reverse", "all"):
            written.append(viz.save_figure(viz.reverse_strip(pictures.trajectory), out / "reverse.png"))
        if kind in ("gif", "all"):
            written.append(viz.save_reverse_gif(pictures.trajectory, out / "reverse.gif"))
    return written


def run(args: argparse.Namespace) -> int:
    """``ddpm viz``: print each file written."""
    for path in draw_pictures(args.run_dir, args.kind, args.out_dir, device=args.device):
        print(path)
    return 0
