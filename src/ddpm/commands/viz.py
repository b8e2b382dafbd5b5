"""`ddpm viz`: pictures of a run — forward and reverse process strips, a GIF of the reverse process,
training curves and schedule plots, and for a ControlNet run its controls above the samples drawn with them
and the real images they came from."""

from __future__ import annotations

import argparse
from pathlib import Path

from ddpm.command_support import OpenedRun, UsageError, control_comparison, gather, open_run
from ddpm.rundir import RunDir

VIZ_KINDS = ("forward", "reverse", "gif", "curves", "schedule", "control", "all")
PROCESS_KINDS = ("forward", "reverse", "gif")  # drawn from one batch of samples and its trajectory
CONTROL_COLUMNS = 8  # held-out controls in control.png


def draw_pictures(
    run_dir: str | Path, kind: str = "all", out_dir: str | Path | None = None, *, device: str = "auto"
) -> list[Path]:
    """Write the run's figures as PNG/GIF into ``out_dir`` (default RUN_DIR/figures); the process
    pictures sample 16 images with the run's own sampler; ``all`` has ``control`` for a ControlNet run."""
    from ddpm import viz

    if kind not in VIZ_KINDS:
        raise UsageError(f"unknown picture {kind!r}; allowed: {', '.join(VIZ_KINDS)}")
    out = Path(out_dir) if out_dir is not None else RunDir(run_dir).figures_dir
    opened = open_run(run_dir, device=device) if kind in (*PROCESS_KINDS, "control", "all") else None
    controlled = opened is not None and opened.model.spec.control is not None
    if kind == "control" and not controlled:
        raise UsageError(f"picture 'control' needs a ControlNet run; {str(run_dir)!r} has no control branch "
                         "(train one with ddpm train --controlnet BASE_RUN --control KIND)")  # fmt: skip
    written: list[Path] = []
    if kind in ("curves", "schedule", "all"):
        written += viz.save_run_curves(run_dir, out)
    if opened is not None and kind in (*PROCESS_KINDS, "all"):
        written += _process_pictures(opened, kind, out)
    if kind == "control" or (kind == "all" and controlled):
        written.append(save_control_picture(opened, out / "control.png"))
    return written


def _process_pictures(opened: OpenedRun, kind: str, out: Path) -> list[Path]:
    """forward.png, reverse.png and reverse.gif (those ``kind`` asks for) from one batch of 16 samples."""
    from ddpm import viz

    pictures, written = gather(opened, n=16), []
    if kind in ("forward", "all"):
        strip = viz.forward_strip(pictures.real, pictures.model.schedule)
        written.append(viz.save_figure(strip, out / "forward.png"))
    if kind in ("reverse", "all"):
        written.append(viz.save_figure(viz.reverse_strip(pictures.trajectory), out / "reverse.png"))
    if kind in ("gif", "all"):
        written.append(viz.save_reverse_gif(pictures.trajectory, out / "reverse.gif"))
    return written


def save_control_picture(opened: OpenedRun, path: Path, *, n: int = CONTROL_COLUMNS, seed: int = 0) -> Path:
    """control.png: rows control | samples | real image for ``n`` held-out images of a ControlNet run, the
    samples drawn with those controls by the run's own sampler."""
    from ddpm.viz import save_figure
    from ddpm.viz.editing import control_figure

    found = control_comparison(opened, n=n, seed=seed)
    return save_figure(control_figure(found.controls, found.samples, found.real), path)


def run(args: argparse.Namespace) -> int:
    """``ddpm viz``: print each file written."""
    for path in draw_pictures(args.run_dir, args.kind, args.out_dir, device=args.device):
        print(path)
    return 0
