"""Pictures of a trained run (``ddpm viz``, ``ddpm report`` and the automatic figures of a run).

Glue between a run directory (config, data, weights) and the drawing functions of :mod:`ddpm.viz`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from ddpm.diffusion.samplers import TrajectoryStep
from ddpm.pipeline import DiffusionModel, load
from ddpm.train.run import load_data, stored_config

VIZ_KINDS = ("forward", "reverse", "gif", "curves", "schedule", "all")


@dataclass
class RunPictures:
    """What the pictures of a run are drawn from."""

    model: DiffusionModel
    real: Tensor  # real x₀ from the training data (images in [-1, 1] or points)
    samples: Tensor  # model samples
    trajectory: list[TrajectoryStep]  # x_t and x̂₀ at every step of sampling (first batch)


def gather(run_dir: str | Path, *, n: int = 64, steps: int = 50, seed: int = 0) -> RunPictures:
    """Load the run's EMA model and data; sample ``n`` with DDIM, recording the trajectory."""
    run_dir = Path(run_dir)
    model = load(run_dir)
    dataset = load_data(stored_config(run_dir))
    count = min(n, len(dataset))
    real = dataset.batch(torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:count])
    labels = None if model.num_classes is None else torch.arange(n) % model.num_classes
    [result] = model.sample_with_result(
        n, sampler="ddim", steps=steps, seed=seed, batch_size=n, labels=labels, trajectory_steps="all"
    )
    return RunPictures(model, real, result.samples.cpu(), result.trajectory)


def draw_pictures(run_dir: str | Path, kind: str = "all", out_dir: str | Path | None = None) -> list[Path]:
    """Write the run's figures (forward strip, reverse strip, GIF, curves, schedules) as PNG/GIF."""
    from ddpm import viz

    if kind not in VIZ_KINDS:
        raise ValueError(f"unknown picture {kind!r}; allowed: {', '.join(VIZ_KINDS)}")
    run_dir = Path(run_dir)
    out = Path(out_dir) if out_dir is not None else run_dir / "figures"
    written: list[Path] = []
    if kind in ("curves", "schedule", "all"):
        written += viz.save_run_curves(run_dir, out)
    if kind in ("forward", "reverse", "gif", "all"):
        pictures = gather(run_dir, n=16)
        if kind in ("forward", "all"):
            strip = viz.forward_strip(pictures.real, pictures.model.schedule)
            written.append(viz.save_figure(strip, out / "forward.png"))
        if kind in ("reverse", "all"):
            written.append(viz.save_figure(viz.reverse_strip(pictures.trajectory), out / "reverse.png"))
        if kind in ("gif", "all"):
            written.append(viz.save_reverse_gif(pictures.trajectory, out / "reverse.gif"))
    return written


def quick_metrics(
    run_dir: str | Path, steps: int, n: int = 256, metrics: tuple[str, ...] = ("fd", "precision", "recall")
) -> dict[str, float] | None:
    """A few headline metrics for the poster when the run logged no evaluation (None when the data
    set's feature network is unavailable, e.g. Inception weights not downloaded)."""
    from ddpm.evaluation_cli import evaluate_path

    try:
        report = evaluate_path(run_dir, n=n, steps=steps, metrics=list(metrics))
    except (FileNotFoundError, ValueError):
        return None
    return {key: value for key, value in report["metrics"].items() if key != "n"}


def make_report(
    run_dir: str | Path,
    out: str | Path,
    *,
    title: str | None = None,
    authors: str = "",
    url: str | None = None,
    page: str = "poster",
) -> Path:
    """The poster of a run (PDF, PNG or SVG by suffix), laid out by the lecture's guidelines."""
    from ddpm import viz

    steps = 50
    pictures = gather(run_dir, n=64, steps=steps)
    caption = f"Samples from the EMA weights, DDIM (η = 0) with {steps} steps."
    metrics = None if (Path(run_dir) / "eval.jsonl").exists() else quick_metrics(run_dir, steps)
    quality = None
    if metrics is not None:
        key = next(iter(metrics))
        quality = {"ddim": {s: quick_metrics(run_dir, s, metrics=["fd"])[key] for s in (5, 10, 20, 50)}}
    viz.make_poster(
        run_dir,
        out,
        samples=pictures.samples,
        data=pictures.real,
        trajectory=pictures.trajectory,
        title=title,
        authors=authors,
        url=url,
        page=page,
        text=viz.PosterText(samples_caption=caption),
        metrics=metrics,
        quality_vs_steps=quality,
        quality_metric=None if metrics is None else next(iter(metrics)),
    )
    return Path(out)
