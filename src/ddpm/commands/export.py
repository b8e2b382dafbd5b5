"""`ddpm export RUN --format diffusers OUT_DIR`: a run's model as a folder that diffusers loads
(``DDPMPipeline.from_pretrained(OUT_DIR)``), written whole or not at all."""

from __future__ import annotations

import argparse
import json
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

from ddpm.command_support import UsageError, open_run
from ddpm.interop.diffusers_model import check_exportable, export_model

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
    diffusers pipeline layout (``ddpm.interop.diffusers_model.export_model``); returns ``out_dir``."""
    if format not in FORMATS:
        raise UsageError(f"--format {format!r} is not supported; allowed: {', '.join(FORMATS)}")
    out = Path(out_dir)
    check_out_dir(out, Path(path), overwrite)
    model = open_run(path, weights=weights, device="cpu").model
    if model.codec is not None:
        raise UsageError(f"{str(path)!r} is a latent diffusion run; exporting one to diffusers is not "
                         "supported yet (its U-Net alone would denoise latents, not images)")  # fmt: skip
    try:
        check_exportable(model)
    except ValueError as err:
        raise UsageError(f"{str(path)!r}: {err}") from None
    return write_folder(out, lambda folder: export_model(model, folder))


def run(args: argparse.Namespace) -> int:
    """``ddpm export``: print the folder written (and how to sample a class-conditional export)."""
    out = export_run(
        args.path, args.out_dir, format=args.format, overwrite=args.overwrite, weights=args.weights
    )
    print(out)
    class_rows = json.loads((out / "unet" / "config.json").read_text()).get("num_class_embeds")
    if class_rows is not None:
        print(
            f"note: a class-conditional U-Net (num_class_embeds = {class_rows}, the last row = no label): "
            "DDPMPipeline passes no class_labels; call its unet with class_labels in your own loop"
        )
    return 0
