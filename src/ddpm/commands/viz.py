"""`ddpm viz`: pictures of a run — forward and reverse process strips, a GIF of the reverse process, a grid of
samples, training curves and schedule plots; for a ControlNet run its controls above the samples drawn with
them and the real images they came from; for an autoencoder run (latent diffusion's first stage) and a
latent run, the autoencoder's reconstructions of held-out images beside them and its latents' channels.
A latent run's pictures are decoded: its forward strip noises latents and shows them decoded."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ddpm.command_support import (
    HELD_OUT_SPLIT,
    OpenedRun,
    UsageError,
    control_comparison,
    device_for,
    gather,
    is_autoencoder_run,
    open_autoencoder,
    open_run,
    write_samples,
)
from ddpm.eval.reference import REFERENCE_SUBSET_SEED, subset_index
from ddpm.nets.latent_codec import LatentCodec
from ddpm.rundir import RunDir, read_checkpoint_meta, resolve_checkpoint
from ddpm.train.config import TrainConfig, config_from_dict
from ddpm.train.run_data import load_data

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from ddpm.model import DiffusionModel

VIZ_KINDS = ("forward", "reverse", "gif", "samples", "curves", "schedule", "control", "reconstructions",
             "latents", "all")  # fmt: skip
PROCESS_KINDS = ("forward", "reverse", "gif", "samples")  # drawn from one batch of samples and its trajectory
FIRST_STAGE_KINDS = ("reconstructions", "latents")  # an autoencoder's: its own run's or a latent run's
AUTOENCODER_RUN_KINDS = ("curves", *FIRST_STAGE_KINDS, "all")  # what an autoencoder run has to show
CONTROL_COLUMNS = 8  # held-out controls in control.png
RECONSTRUCTION_COLUMNS, RECONSTRUCTION_PAIRS = 8, 3  # reconstructions.png: 3 pairs of rows of 8 images
LATENT_IMAGES = 4  # latents.png: one row per image


def draw_pictures(
    run_dir: str | Path, kind: str = "all", out_dir: str | Path | None = None, *, device: str = "auto"
) -> list[Path]:
    """Write the run's figures as PNG/GIF into ``out_dir`` (default RUN_DIR/figures); the process
    pictures sample 16 images with the run's own sampler; ``all`` has ``control`` for a ControlNet run, and
    ``reconstructions`` and ``latents`` for a latent run. An autoencoder run has only curves and those two."""
    from ddpm import viz

    if kind not in VIZ_KINDS:
        raise UsageError(f"unknown picture {kind!r}; allowed: {', '.join(VIZ_KINDS)}")
    out = Path(out_dir) if out_dir is not None else RunDir(run_dir).figures_dir
    if is_autoencoder_run(run_dir):
        return _autoencoder_run_pictures(run_dir, kind, out, device)
    needs_model = (*PROCESS_KINDS, "control", *FIRST_STAGE_KINDS, "all")
    opened = open_run(run_dir, device=device) if kind in needs_model else None
    controlled = opened is not None and opened.model.spec.control is not None
    latent = opened is not None and opened.model.codec is not None
    if kind == "control" and not controlled:
        raise UsageError(f"picture 'control' needs a ControlNet run; {str(run_dir)!r} has no control branch "
                         "(train one with ddpm train --controlnet BASE_RUN --control KIND)")  # fmt: skip
    if kind in FIRST_STAGE_KINDS and not latent:
        raise UsageError(f"picture {kind!r} needs an autoencoder run or a latent diffusion run; "
                         f"{str(run_dir)!r} is a diffusion run on pixels")  # fmt: skip
    written: list[Path] = []
    if kind in ("curves", "schedule", "all"):
        written += viz.save_run_curves(run_dir, out)
    if opened is not None and kind in (*PROCESS_KINDS, "all"):
        written += _process_pictures(opened, kind, out)
    if kind == "control" or (kind == "all" and controlled):
        written.append(save_control_picture(opened, out / "control.png"))
    if latent and kind in (*FIRST_STAGE_KINDS, "all"):
        written += first_stage_pictures(opened.model.codec, opened.config, kind, out)
    return written


def _process_pictures(opened: OpenedRun, kind: str, out: Path) -> list[Path]:
    """forward.png, reverse.png, reverse.gif and samples.png (those ``kind`` asks for) from one batch of 16
    samples; a latent run's are decoded."""
    from ddpm import viz

    pictures, written = gather(opened, n=16), []
    model = pictures.model
    if kind in ("forward", "all"):
        written.append(viz.save_figure(_forward_strip(pictures.real, model), out / "forward.png"))
    if kind in ("reverse", "all"):
        written.append(viz.save_figure(viz.reverse_strip(pictures.trajectory), out / "reverse.png"))
    if kind in ("gif", "all"):
        written.append(viz.save_reverse_gif(pictures.trajectory, out / "reverse.gif"))
    if kind in ("samples", "all"):
        written.append(write_samples(pictures.samples, out / "samples.png", model.kind))
    return written


def _forward_strip(real: torch.Tensor, model: DiffusionModel) -> Figure:
    """The forward process where the model's diffusion runs: on pixels, or on a latent run's latents of
    ``real``, each noised state decoded (the strip a latent model's sampler reverses)."""
    from ddpm.viz import forward_strip

    if model.codec is None:
        return forward_strip(real, model.schedule)
    with torch.inference_mode():
        latents = model.encode(real[:4]).cpu()
        return forward_strip(latents, model.schedule, decode=lambda z: model.decode(z).cpu())


def _autoencoder_run_pictures(run_dir: str | Path, kind: str, out: Path, device: str) -> list[Path]:
    """An autoencoder run's pictures: training curves, reconstructions.png and latents.png."""
    from ddpm import viz

    if kind not in AUTOENCODER_RUN_KINDS:
        raise UsageError(f"picture {kind!r} is a diffusion model's; {str(run_dir)!r} is an autoencoder run "
                         f"(latent diffusion's first stage), whose pictures are: "
                         f"{', '.join(AUTOENCODER_RUN_KINDS)}")  # fmt: skip
    _, checkpoint = resolve_checkpoint(run_dir)
    config = config_from_dict(read_checkpoint_meta(checkpoint)["config"])
    codec = open_autoencoder(checkpoint).to(device_for(device))
    written = first_stage_pictures(codec, config, kind, out)  # first: its data may fail to load
    return (viz.save_run_curves(run_dir, out) if kind in ("curves", "all") else []) + written


def first_stage_pictures(codec: LatentCodec, config: TrainConfig | None, kind: str, out: Path) -> list[Path]:
    """reconstructions.png (originals above the EMA autoencoder's reconstructions, pairs of rows) and
    latents.png (each normalised latent channel of a few images as a heat map), those ``kind`` asks for,
    of held-out images of the run's data (a seeded subset, as ``ddpm eval`` draws its reference)."""
    from ddpm.viz import save_figure
    from ddpm.viz.autoencoder import latent_channels_figure, reconstruction_pairs_figure

    if config is None:
        raise UsageError(f"picture {kind!r} needs the run's data; a diffusers model folder records none")
    held_out = load_data(config, split=HELD_OUT_SPLIT)
    count = min(RECONSTRUCTION_COLUMNS * RECONSTRUCTION_PAIRS, len(held_out))
    images = held_out.batch(subset_index(len(held_out), count, REFERENCE_SUBSET_SEED))
    with torch.inference_mode():
        latents = codec.encode(images.to(codec.mean.device))  # the posterior mean, normalised
        rebuilt = codec.decode(latents).clamp(-1, 1).cpu()
    written = []
    if kind in ("reconstructions", "all"):
        figure = reconstruction_pairs_figure(images, rebuilt, columns=RECONSTRUCTION_COLUMNS)
        written.append(save_figure(figure, out / "reconstructions.png"))
    if kind in ("latents", "all"):
        shown = slice(0, LATENT_IMAGES)
        title = (
            f"normalised latents, f={codec.downsample_factor}, {HELD_OUT_SPLIT} split of {config.data.spec}"
        )
        figure = latent_channels_figure(images[shown], latents[shown].cpu(), title=title)
        written.append(save_figure(figure, out / "latents.png"))
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
