"""`ddpm sample`: draw from a run into a PNG grid, a samples .npz and/or a GIF of the reverse process;
with ``--class``, rows of chosen classes of a class-conditional model (classifier-free guidance); with
``--control``, one sample per control image of a control run (a ControlNet, Zhang, Rao & Agrawala 2023, with
its ``--control-scale``; or a concat run, which has no scale), combined with ``--class`` and ``--guidance``
when given. A control run sampled without ``--control`` draws with the control dropped: a ControlNet run's
frozen base, a concat run's network given the blank control it learned at the drop rate."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ddpm import editing
from ddpm.command_support import (
    SamplerFlags,
    UsageError,
    check_count,
    check_guidance_flag,
    check_out,
    open_run,
    write_samples,
)
from ddpm.data.controls import load_control_images
from ddpm.model import DiffusionModel

OUTPUT_SUFFIXES = (".png", ".npz")


def sample_to_files(
    path: str | Path,
    *,
    n: int = 64,
    sampler: str | None = None,
    steps: int | None = None,
    eta: float | None = None,
    spacing: str | None = None,
    eps_scale: float | None = None,
    seed: int = 0,
    batch_size: int = 256,
    out: str | Path = "samples.png",
    gif: str | Path | None = None,
    classes: str | None = None,
    guidance: float = 1.0,
    weights: str = "ema",
    device: str = "auto",
    control: str | Path | None = None,
    control_scale: float | None = None,
) -> list[Path]:
    """Draw ``n`` samples (``n`` per class with ``classes``) and write them; returns the files written.

    Sampler settings left None are the run's own (those its previews and evaluation use).
    """
    out = check_out(out, OUTPUT_SUFFIXES)
    gif = None if gif is None else check_out(gif, (".gif",), "--gif")
    check_count("--n", n)
    check_count("--batch-size", batch_size)
    check_count("--seed", seed, minimum=0)
    check_guidance_flag(guidance)
    if classes is None and guidance != 1:  # s = 1 is the plain model, which needs no class
        raise UsageError("--guidance needs --class K|all (guidance steers towards a class)")
    if (classes is not None or control is not None) and gif is not None:
        raise UsageError(
            "--gif cannot be combined with --class or --control; draw the animation without them"
        )
    if control_scale is not None and control is None:
        raise UsageError(f"--control-scale {control_scale} needs --control IMAGE_OR_DIR (the controls it "
                         "scales)")  # fmt: skip
    flags = SamplerFlags(sampler, steps, spacing, eps_scale, eta)
    flags.check()  # before loading: what the flags alone say
    model = open_run(path, weights=weights, device=device).model
    flags.check(model.sampling.sampler)  # against the sampler that will run
    if control is not None:
        options = {**flags.options(), "guidance": guidance, "seed": seed, "batch_size": batch_size}
        return [_controlled(model, control, control_scale, classes, out, options)]
    if classes is not None:
        return [_class_rows(model, classes, guidance, n, flags, seed, batch_size, out)]
    with_gif = {"trajectory_steps": "all"} if gif is not None else {}
    results = model.sample_with_result(n, **flags.options(), seed=seed, batch_size=batch_size, **with_gif)
    written = [write_samples(torch.cat([r.samples.cpu() for r in results]), out, model.kind)]
    if gif is not None:
        from ddpm.viz.animate import save_reverse_gif

        written.append(save_reverse_gif(results[0].trajectory, gif))
    return written


def _class_rows(
    model: DiffusionModel, classes: str, guidance: float, n: int, flags: SamplerFlags, seed: int,
    batch_size: int, out: Path,
) -> Path:  # fmt: skip
    """``n`` images of each class: a .png grid with a row per class or an .npz with ``labels``."""
    images, labels = editing.sample_classes(
        model, classes, guidance=guidance, n_per_class=n, seed=seed, batch_size=batch_size, **flags.options()
    )
    if out.suffix.lower() == ".npz":
        return write_samples(images, out, model.kind, labels)
    from ddpm.viz import save_figure
    from ddpm.viz.editing import class_grid_figure

    return save_figure(class_grid_figure(images, labels, n), out)


def _controlled(
    model: DiffusionModel, control: str | Path, scale: float | None, classes: str | None, out: Path,
    options: dict,
) -> Path:  # fmt: skip
    """One sample per control image (each class's, with ``classes``): a .png grid or an .npz with labels."""
    if model.spec.control is None:
        raise UsageError("--control needs a ControlNet run (ddpm train --controlnet BASE --control KIND) or "
                         "a concat run (--control KIND alone); this model has no control")  # fmt: skip
    if model.spec.control.concat and scale is not None:
        raise UsageError(f"--control-scale {scale} applies to ControlNet runs; this concat run has its "
                         "control in its input and no strength knob: leave --control-scale out")  # fmt: skip
    controls = load_control_images(control, (model.spec.control.control_channels, *model.sample_shape[1:]))
    labels = None
    if classes is not None:  # every control once per class: rows of controls, one row per class
        ks = editing.parse_classes(model, classes)
        labels = torch.tensor(ks).repeat_interleave(len(controls))
        controls = controls.repeat(len(ks), 1, 1, 1)
    strength = {} if scale is None else {"control_scale": scale}  # a ControlNet's default: 1, as trained
    images = model.sample(len(controls), control=controls, labels=labels, **strength, **options)
    return write_samples(images, out, model.kind, labels)


def run(args: argparse.Namespace) -> int:
    """``ddpm sample``: print each file written."""
    written = sample_to_files(
        args.path, n=args.n, sampler=args.sampler, steps=args.steps, eta=args.eta, spacing=args.spacing,
        eps_scale=args.eps_scale, seed=args.seed, batch_size=args.batch_size, out=args.out, gif=args.gif,
        classes=args.classes, guidance=args.guidance, weights=args.weights, device=args.device,
        control=args.control, control_scale=args.control_scale,
    )  # fmt: skip
    for path in written:
        print(path)
    return 0
