"""`ddpm report`: a poster of a run, laid out by the lecture's poster guidelines.

The run's checkpoint is loaded once; the samples, the reverse-process strip and (for a run that logged
no evaluation) the headline metrics and quality-against-steps curve all come from that one model,
drawn with the run's own sampler. A ControlNet run's poster also shows held-out controls | samples | real
images and its control kind's adherence for the controlled model, the base without control (chance) and
the real images (the ceiling), on the same held-out controls.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ddpm.command_support import (
    OpenedRun,
    SamplerFlags,
    UsageError,
    check_out,
    control_comparison,
    device_for,
    draw_for_scoring,
    gather,
    open_run,
    prepare_real,
)
from ddpm.eval import score
from ddpm.eval.adherence import ADHERENCE_NAMES
from ddpm.interop.diffusers import is_diffusers_folder
from ddpm.model import SamplingConfig

if TYPE_CHECKING:  # the pictures' modules load matplotlib: imported where a poster is drawn
    from ddpm.viz import ControlPanel

POSTER_SUFFIXES = (".pdf", ".png", ".svg")
QUALITY_STEPS = (5, 10, 20, 50)  # sampler steps of the poster's quality-against-steps curve
HEADLINE_METRICS = ("fd", "precision", "recall")
CONTROL_IMAGES = 64  # held-out controls a ControlNet run's adherence is measured on
CONTROL_COLUMNS = 8  # of them shown on the poster


def describe_sampler(settings: SamplingConfig) -> str:
    """``dpm++2m_sde with 20 steps (trailing spacing, ε / 1.06)``: which sampler drew the samples."""
    steps = f"{settings.steps} steps" if settings.steps is not None else "its default steps"
    details = [f"{settings.spacing} spacing"] if settings.spacing is not None else []
    if settings.sampler == "ddim":
        details.append(f"η = {settings.eta:g}")
    if settings.eps_scale != 1:
        details.append(f"ε / {settings.eps_scale:g}")
    return f"{settings.sampler} with {steps}" + (f" ({', '.join(details)})" if details else "")


def quick_metrics(
    opened: OpenedRun, *, n: int = 256, steps: Sequence[int] = QUALITY_STEPS, device: str = "auto"
) -> tuple[dict[str, float], dict[int, float]] | None:
    """Headline metrics of ``n`` samples from the run's own sampler, and the first of them at each
    number of ``steps``: for a run that logged no evaluation. None when the data set's feature
    network is unavailable (e.g. Inception weights not downloaded)."""
    model, data = opened.model, opened.config.data
    try:
        evaluation = prepare_real(
            data.spec, n, run_data=data, metrics=HEADLINE_METRICS, device=device_for(device), progress=True
        )
    except (FileNotFoundError, ValueError):
        return None

    def scores(flags: SamplerFlags) -> dict[str, float]:
        found = score(evaluation, draw_for_scoring(model, n, flags), seed=0, progress=True)
        return {key: value for key, value in found.items() if key != "n"}

    headline = scores(SamplerFlags())
    key = next(iter(headline))
    own = model.sampling.steps
    quality = {s: headline[key] if s == own else scores(SamplerFlags(steps=s))[key] for s in steps}
    return headline, quality


def control_panel(opened: OpenedRun, *, n: int = CONTROL_IMAGES, seed: int = 0) -> ControlPanel | None:
    """A control run's adherence on ``n`` held-out controls (controlled, chance, ceiling: ``ddpm.eval.
    adherence_levels``) and the first of them as controls | samples | real images; None for other runs."""
    from ddpm import viz

    if opened.model.spec.control is None:
        return None
    found = control_comparison(opened, n=n, seed=seed, uncontrolled=True)
    levels = found.adherence()
    shown = slice(0, CONTROL_COLUMNS)
    return viz.ControlPanel(
        kind=found.kind, controls=found.controls[shown], samples=found.samples[shown], real=found.real[shown],
        measure=ADHERENCE_NAMES.get(found.kind, "adherence"), n=len(found.real),
        mode=opened.model.spec.control.mode,
        levels=None if levels is None else {level: value.mean for level, value in levels.items()},
    )  # fmt: skip


def make_report(
    run_dir: str | Path,
    out: str | Path,
    *,
    title: str | None = None,
    authors: str = "",
    url: str | None = None,
    page: str = "poster",
    device: str = "auto",
) -> Path:
    """The poster of a run (PDF, PNG or SVG by suffix), from one load of its newest checkpoint."""
    from ddpm import viz

    out = check_out(out, POSTER_SUFFIXES)
    if is_diffusers_folder(run_dir):  # the poster tells a training run: its config, log and evaluations
        raise UsageError(
            f"{str(run_dir)!r} is a diffusers model folder, not a run directory: a poster tells a training "
            "run (its config, log and evaluations); use ddpm sample or ddpm eval --data SPEC on the folder"
        )
    opened = open_run(run_dir, device=device)
    if opened.run_dir is None:
        raise UsageError(f"{str(run_dir)!r} is a checkpoint outside a run directory; give the run directory")
    pictures = gather(opened, n=64)
    caption = f"Samples from the EMA weights, {describe_sampler(opened.model.sampling)}."
    found = None if opened.run_dir.eval_path.exists() else quick_metrics(opened, device=device)
    metrics, quality = (None, None) if found is None else found
    control = control_panel(opened)
    viz.make_poster(
        opened.run_dir.path, out, samples=pictures.samples, data=pictures.real,
        trajectory=pictures.trajectory, title=title, authors=authors, url=url, page=page,
        text=viz.PosterText(samples_caption=caption), metrics=metrics,
        quality_vs_steps=None if quality is None else {opened.model.sampling.sampler: quality},
        quality_metric=None if metrics is None else next(iter(metrics)), control=control,
    )  # fmt: skip
    return out


def run(args: argparse.Namespace) -> int:
    """``ddpm report``: print the poster's path."""
    poster = make_report(args.run_dir, args.out, title=args.title, authors=args.authors, url=args.url,
                         page=args.page, device=args.device)  # fmt: skip
    print(poster)
    return 0
