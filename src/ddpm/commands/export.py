"""`ddpm export RUN --format diffusers OUT_DIR`: a run's model as a folder that diffusers loads
(``DDPMPipeline.from_pretrained(OUT_DIR)``; a latent run's ``LDMPipeline.from_pretrained(OUT_DIR)``; an
autoencoder run's ``AutoencoderKL.from_pretrained(OUT_DIR)``), written whole or not at all. ControlNet
runs are refused: their own run directory is the format."""

from __future__ import annotations

import argparse
import json
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

from ddpm.command_support import UsageError, is_autoencoder_run, open_autoencoder, open_run
from ddpm.interop.diffusers_ldm import check_ldm_exportable, export_ldm
from ddpm.interop.diffusers_model import check_exportable, export_model
from ddpm.interop.diffusers_vae import export_codec
from ddpm.model import DiffusionModel

FORMATS = ("diffusers",)


def check_out_dir(out: Path, source: Path, overwrite: bool) -> None:
    """Refuse an ``OUT_DIR`` that is a file, a non-empty folder without ``--overwrite``, or (with it) the
    model being exported or a folder holding it."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"OUT_DIR {str(out)!r} is a file; give a folder to write the model into")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise UsageError(
            f"OUT_DIR {str(out)!r} exists and is not empty; give --overwrite to replace it, or another folder"
        )
    target, model = out.resolve(), source.resolve()
    if overwrite and (target == model or target in model.parents):
        raise UsageError(f"OUT_DIR {str(out)!r} holds the model being exported; choose another folder")


def write_folder(out: Path, write: Callable[[Path], object]) -> Path:
    """``write`` into a new folder beside ``out``, then put it in ``out``'s place (replacing what was
    there): a failure part-way leaves ``out`` as it was and no partial folder behind."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:8]
    staging, previous = (out.parent / f".{out.name}.{kind}-{tag}" for kind in ("partial", "previous"))
    staging.mkdir()
    try:
        write(staging)
        if out.exists():
            out.rename(previous)
        try:
            staging.rename(out)
        except OSError:
            if previous.exists():
                previous.rename(out)
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    shutil.rmtree(previous, ignore_errors=True)
    return out


def export_run(
    path: str | Path,
    out_dir: str | Path,
    *,
    format: str = "diffusers",
    overwrite: bool = False,
    weights: str = "ema",
) -> Path:
    """Write the model of a run directory, checkpoint folder (or diffusers folder) to ``out_dir`` in the
    diffusers pipeline layout (``ddpm.interop.diffusers_model.export_model``; a latent run's
    ``ddpm.interop.diffusers_ldm.export_ldm``), or an autoencoder run's autoencoder as an AutoencoderKL
    folder (``ddpm.interop.diffusers_vae.export_codec``); returns ``out_dir``."""
    return _export(path, out_dir, format=format, overwrite=overwrite, weights=weights)[0]


def _export(
    path: str | Path, out_dir: str | Path, *, format: str, overwrite: bool, weights: str
) -> tuple[Path, DiffusionModel | None]:
    """:func:`export_run`, also returning the model exported (None for an autoencoder run)."""
    if format not in FORMATS:
        raise UsageError(f"--format {format!r} is not supported; allowed: {', '.join(FORMATS)}")
    out = Path(out_dir)
    check_out_dir(out, Path(path), overwrite)
    if is_autoencoder_run(path):
        codec = open_autoencoder(path, weights=weights)
        return write_folder(out, lambda folder: export_codec(codec, folder)), None
    model = open_run(path, weights=weights, device="cpu").model
    check, export = (
        (check_exportable, export_model) if model.codec is None else (check_ldm_exportable, export_ldm)
    )
    try:
        check(model)
    except ValueError as err:
        raise UsageError(f"{str(path)!r}: {err}") from None
    return write_folder(out, lambda folder: export(model, folder)), model


def sampler_note(model: DiffusionModel) -> str | None:
    """How to draw with ``ddpm sample`` what LDMPipeline draws from a latent export, when the run's own
    sampler is another (LDMPipeline has DDIM only; its η and num_inference_steps are the caller's)."""
    ours = model.sampling
    if model.codec is None or (ours.sampler == "ddim" and ours.eps_scale == 1 and not ours.eta):
        return None
    spacing = "trailing" if ours.spacing == "trailing" else "uniform"  # as export_ldm writes it
    scaled = f" with eps_scale {ours.eps_scale}" if ours.eps_scale != 1 else ""
    return (
        f"note: LDMPipeline samples with DDIM only; this run's own sampler is {ours.sampler}{scaled}: "
        f"ddpm sample RUN --sampler ddim --eta 0 --eps-scale 1 --spacing {spacing} --steps S draws what "
        "LDMPipeline(num_inference_steps=S, eta=0) draws"
    )


def run(args: argparse.Namespace) -> int:
    """``ddpm export``: print the folder written (and how to sample a class-conditional export)."""
    out, model = _export(
        args.path, args.out_dir, format=args.format, overwrite=args.overwrite, weights=args.weights
    )
    print(out)
    if model is None:  # an autoencoder: no U-Net, no sampler
        return 0
    note = sampler_note(model)
    if note is not None:
        print(note)
    class_rows = json.loads((out / "unet" / "config.json").read_text()).get("num_class_embeds")
    if class_rows is not None:
        print(
            f"note: a class-conditional U-Net (num_class_embeds = {class_rows}, the last row = no label): "
            "DDPMPipeline passes no class_labels; call its unet with class_labels in your own loop"
        )
    return 0
