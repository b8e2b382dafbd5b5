"""Checkpoints written atomically: safetensors for tensors, JSON for everything else.

The layout of a checkpoint folder (``checkpoints/step_0001000/``), its names and its verification
belong to :mod:`ddpm.rundir`; this module writes it, and reads back what only training needs (the
optimizer's moments, keyed ``state.<param index>.<name>``; for importance-sampled L_vlb the timestep
sampler's loss history, keyed ``timestep_sampler.<name>``; and an objective's own training state, such as
an autoencoder run's patch discriminator and its optimizer, under prefixes of its own, in the same file).

How a crash at any instant leaves the folder (each step is a rename, atomic on POSIX):

- every file is written into ``.tmp-step_N-<pid>/`` and fsynced, then the folder is fsynced and
  renamed to ``step_N``, then ``checkpoints/`` is fsynced: ``step_N`` is complete or absent;
- a checkpoint written again under the same step is first renamed aside to ``.old-step_N-<pid>``;
  if a crash falls between the two renames, :meth:`RunDir.checkpoints` serves the aside copy;
- old checkpoints are pruned (renamed to ``.del-…``, then deleted) only after the new one is in place.

Scratch folders of a dead process are tidied by the next :func:`save_checkpoint`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save as safetensors_bytes
from torch import Tensor

from ddpm.rundir import (
    CHECKPOINT_FILES,
    MANIFEST,
    OPTIMIZER_FILE,
    SCRATCH_PATTERN,
    RunDir,
    checkpoint_step,
    complete_checkpoints,
    manifest_bytes,
    read_tensor_file,
    read_weights,
    verify_checkpoint,
)
from ddpm.safe_files import fsync_dir, pid_alive, write_durably


@dataclass
class Checkpoint:
    path: Path
    step: int
    meta: dict[str, Any]
    model: dict[str, Tensor]
    ema: dict[str, Tensor]
    optimizer: dict[str, Tensor]
    timestep_sampler: dict[str, Tensor] = field(default_factory=dict)  # {} for a run without one
    # the objective's own tensors (an autoencoder run's discriminator: ``discriminator.…``); {} if none
    extra: dict[str, Tensor] = field(default_factory=dict)


# The prefixes of the optimizer's moments and of the timestep sampler's tensors in the optimizer file (the
# trainer's own file); any other key there is an objective's own state (Checkpoint.extra).
OPTIMIZER_PREFIX = "state."
TIMESTEP_SAMPLER_PREFIX = "timestep_sampler."


def optimizer_to_tensors(state_dict: dict[str, Any]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Split a torch optimizer state dict into tensors (for safetensors) and JSON-able rest."""
    tensors, scalars = {}, {}
    for index, state in state_dict["state"].items():
        for name, value in state.items():
            if isinstance(value, Tensor):
                tensors[f"state.{index}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{index}.{name}"] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def optimizer_from_tensors(tensors: dict[str, Tensor], rest: dict[str, Any]) -> dict[str, Any]:
    """The torch optimizer state dict that :func:`optimizer_to_tensors` split."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, index, name = key.split(".", 2)
        state.setdefault(int(index), {})[name] = value
    for key, value in rest.get("scalars", {}).items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    return {"state": state, "param_groups": rest["param_groups"]}


def save_checkpoint(
    run_dir: Path,
    step: int,
    *,
    model: dict[str, Tensor],
    ema: dict[str, Tensor],
    optimizer: dict[str, Any],
    meta: dict[str, Any],
    keep_last: int = 2,
    timestep_sampler: dict[str, Tensor] | None = None,
    extra: dict[str, Tensor] | None = None,
) -> Path:
    """Write a checkpoint into a temporary folder, fsync it, then rename it into place.

    A crash (or a second Ctrl-C) at any moment leaves the previous checkpoints untouched and either
    the new one complete or no trace of it. A write error (disk full, read-only folder) raises
    OSError naming the checkpoint, after removing the temporary folder. Older checkpoints are
    pruned to ``keep_last`` only after the new one is in place. ``timestep_sampler``: its state dict,
    kept beside the optimizer's moments (nothing is added for a run without one). ``extra``: an
    objective's own tensors, keyed with a prefix of its own (neither ``state.`` nor ``timestep_sampler.``).
    """
    final = RunDir(run_dir).checkpoint_dir(step)
    folder = final.parent
    tmp = folder / f".tmp-{final.name}-{os.getpid()}"
    opt_tensors, opt_rest = optimizer_to_tensors(optimizer)
    for name, value in (timestep_sampler or {}).items():
        opt_tensors[TIMESTEP_SAMPLER_PREFIX + name] = value.detach().cpu().contiguous()
    for name, value in (extra or {}).items():
        if name.startswith((OPTIMIZER_PREFIX, TIMESTEP_SAMPLER_PREFIX)):
            raise ValueError(f"extra checkpoint tensor {name!r} takes a prefix the trainer's file reserves")
        opt_tensors[name] = value.detach().cpu().contiguous()
    contents = (
        safetensors_bytes(_cpu(model)),
        safetensors_bytes(_cpu(ema)),
        safetensors_bytes(opt_tensors),
        json.dumps({**meta, "step": step, "optimizer": opt_rest}, indent=1).encode("utf-8"),
    )
    files = dict(zip(CHECKPOINT_FILES, contents, strict=True))  # the manifest lists them in this order
    try:
        folder.mkdir(parents=True, exist_ok=True)
        clean_scratch(folder)
        tmp.mkdir()
        for name, data in files.items():
            write_durably(tmp / name, data)
        manifest = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
        write_durably(tmp / MANIFEST, manifest_bytes(manifest))
        fsync_dir(tmp)
        _swap_in(tmp, final)
        fsync_dir(folder)
    except BaseException as err:  # also KeyboardInterrupt (a second Ctrl-C): no half-written folder
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(err, OSError):
            raise OSError(f"could not write checkpoint {final}: {err.strerror or err}") from err
        raise
    _prune(folder, final, keep_last)
    return final


def mark_best(path: Path) -> Path:
    """Copy a complete checkpoint to ``checkpoints/best`` atomically (durable copy, then rename)."""
    path = Path(path)
    best = path.parent / RunDir.BEST
    tmp = path.parent / f".tmp-{RunDir.BEST}-{os.getpid()}"
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        for file in sorted(path.iterdir()):
            write_durably(tmp / file.name, file.read_bytes())
        fsync_dir(tmp)
        _swap_in(tmp, best)
        fsync_dir(path.parent)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(err, OSError):
            raise OSError(f"could not write checkpoint {best}: {err.strerror or err}") from err
        raise
    return best


def _swap_in(tmp: Path, final: Path) -> None:
    """Rename ``tmp`` to ``final``; an existing ``final`` is moved aside first and deleted after."""
    aside = None
    if final.exists():
        aside = final.parent / f".old-{final.name}-{os.getpid()}"
        os.replace(final, aside)
    try:
        os.replace(tmp, final)
    except BaseException:
        if aside is not None and not final.exists():
            os.replace(aside, final)
        raise
    if aside is not None:
        _remove_tree(aside)


def _prune(folder: Path, newest: Path, keep_last: int) -> None:
    """Delete all but the newest ``keep_last`` checkpoints up to ``newest`` (later ones are left alone)."""
    newest_step = checkpoint_step(newest)
    older = [p for p in complete_checkpoints(folder) if checkpoint_step(p) <= newest_step]
    for old in older[:-keep_last]:
        doomed = folder / f".del-{old.name}-{os.getpid()}"
        try:
            os.replace(old, doomed)  # one atomic step out of the listing, then the slow delete
        finally:
            _remove_tree(doomed)


def _remove_tree(path: Path) -> None:
    """Delete a scratch folder; a Ctrl-C meanwhile still lets the (short) delete finish first."""
    try:
        shutil.rmtree(path, ignore_errors=True)
    except KeyboardInterrupt:
        shutil.rmtree(path, ignore_errors=True)
        raise


def clean_scratch(folder: Path) -> None:
    """Tidy the scratch folders of dead processes: delete temporaries, put an aside copy back.

    Assumes one writer per run directory; a live process's scratch folders are never touched.
    """
    for entry in Path(folder).iterdir():
        match = SCRATCH_PATTERN.match(entry.name)
        if not match or int(match.group(3)) == os.getpid() or pid_alive(int(match.group(3))):
            continue
        kind, name = match.group(1), match.group(2)
        if kind == "old" and not (folder / name).exists():
            os.replace(entry, folder / name)  # the crash fell between the two renames of _swap_in
        elif entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def _cpu(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in tensors.items()}


def load_checkpoint(path: Path, *, with_optimizer: bool = True) -> Checkpoint:
    """Load a verified checkpoint folder onto the CPU (with the optimizer's moments, to resume)."""
    path = Path(path)
    meta = verify_checkpoint(path)
    trainer = read_tensor_file(path, OPTIMIZER_FILE) if with_optimizer else {}
    sampler = {k[len(TIMESTEP_SAMPLER_PREFIX):]: v for k, v in trainer.items()
               if k.startswith(TIMESTEP_SAMPLER_PREFIX)}  # fmt: skip
    own = (OPTIMIZER_PREFIX, TIMESTEP_SAMPLER_PREFIX)
    return Checkpoint(
        path=path,
        step=int(meta["step"]),
        meta=meta,
        model=read_weights(path, "model"),
        ema=read_weights(path, "ema"),
        optimizer={k: v for k, v in trainer.items() if k.startswith(OPTIMIZER_PREFIX)},
        timestep_sampler=sampler,
        extra={k: v for k, v in trainer.items() if not k.startswith(own)},
    )


def assert_finite(tensors: dict[str, Tensor], what: str) -> None:
    """Refuse to save ``what`` when any of its floating-point tensors holds a NaN or an infinity."""
    for name, value in tensors.items():
        if value.dtype.is_floating_point and not torch.isfinite(value).all():
            raise ValueError(f"refusing to save {what}: tensor {name!r} has non-finite values")
