"""Checkpoints: safetensors for tensors, JSON for everything else, written atomically.

Layout of one checkpoint (a folder ``checkpoints/step_0001000/``)::

    model.safetensors      raw weights
    ema.safetensors        EMA weights
    optimizer.safetensors  AdamW moments, keyed state.<param index>.<name>
    meta.json              step, config, data fingerprint, EMA updates, counters, optimizer hyperparameters
    manifest.json          sha256 of each file above, written last

How a crash at any instant leaves the folder (each step is a rename, atomic on POSIX):

- every file is written into ``.tmp-step_N-<pid>/`` and fsynced, then the folder is fsynced and
  renamed to ``step_N``, then ``checkpoints/`` is fsynced: ``step_N`` is complete or absent;
- a checkpoint written again under the same step is first renamed aside to ``.old-step_N-<pid>``;
  if a crash falls between the two renames, :func:`list_checkpoints` serves the aside copy;
- old checkpoints are pruned (renamed to ``.del-…``, then deleted) only after the new one is in place.

Scratch folders of a dead process are tidied by the next :func:`save_checkpoint`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save as safetensors_bytes
from torch import Tensor

from ddpm.safe_files import (
    UnsafeFileError,
    fsync_dir,
    load_safetensors,
    pid_alive,
    read_safetensors_header,
    write_durably,
)

CHECKPOINT_PATTERN = re.compile(r"^step_(\d{7,})$")
SCRATCH_PATTERN = re.compile(r"^\.(tmp|old|del)-(.+)-(\d+)$")  # .tmp-step_0000010-<pid>, .old-best-<pid>
TENSOR_FILES = ("model.safetensors", "ema.safetensors", "optimizer.safetensors")
CHECKPOINT_FILES = (*TENSOR_FILES, "meta.json")  # listed in manifest.json


class CheckpointError(ValueError):
    """A checkpoint that is missing, incomplete or does not match its manifest."""


@dataclass
class Checkpoint:
    path: Path
    step: int
    meta: dict[str, Any]
    model: dict[str, Tensor]
    ema: dict[str, Tensor]
    optimizer: dict[str, Tensor]


def checkpoint_dir(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"step_{step:07d}"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _manifest_bytes(manifest: dict[str, str]) -> bytes:
    """The one byte form of a manifest; any other bytes (even equal JSON) count as modified."""
    return json.dumps(manifest, indent=1).encode("ascii")


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
) -> Path:
    """Write a checkpoint into a temporary folder, fsync it, then rename it into place.

    A crash (or a second Ctrl-C) at any moment leaves the previous checkpoints untouched and either
    the new one complete or no trace of it. A write error (disk full, read-only folder) raises
    OSError naming the checkpoint, after removing the temporary folder. Older checkpoints are
    pruned to ``keep_last`` only after the new one is in place.
    """
    final = checkpoint_dir(run_dir, step)
    folder = final.parent
    tmp = folder / f".tmp-{final.name}-{os.getpid()}"
    opt_tensors, opt_rest = optimizer_to_tensors(optimizer)
    files = {
        "model.safetensors": safetensors_bytes(_cpu(model)),
        "ema.safetensors": safetensors_bytes(_cpu(ema)),
        "optimizer.safetensors": safetensors_bytes(opt_tensors),
        "meta.json": json.dumps({**meta, "step": step, "optimizer": opt_rest}, indent=1).encode("utf-8"),
    }
    try:
        folder.mkdir(parents=True, exist_ok=True)
        clean_scratch(folder)
        tmp.mkdir()
        for name, data in files.items():
            write_durably(tmp / name, data)
        manifest = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
        write_durably(tmp / "manifest.json", _manifest_bytes(manifest))
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
    best = path.parent / "best"
    tmp = path.parent / f".tmp-best-{os.getpid()}"
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
    newest_step = _step(newest.name)
    older = [p for p in _real_checkpoints(folder) if _step(p.name) <= newest_step]
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


def _step(name: str) -> int:
    return int(CHECKPOINT_PATTERN.match(name).group(1))


def _real_checkpoints(folder: Path) -> list[Path]:
    found = [
        p for p in folder.iterdir() if CHECKPOINT_PATTERN.match(p.name) and (p / "manifest.json").is_file()
    ]
    return sorted(found, key=lambda p: _step(p.name))


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoint folders (with a manifest), oldest first.

    A step whose folder is missing but whose aside copy ``.old-step_N-<pid>`` of a dead process
    exists (a crash between the two renames of a re-save) is served by that copy.
    """
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    by_step = {_step(p.name): p for p in _real_checkpoints(folder)}
    for entry in folder.iterdir():
        match = SCRATCH_PATTERN.match(entry.name)
        if match and match.group(1) == "old" and CHECKPOINT_PATTERN.match(match.group(2)):
            step = _step(match.group(2))
            alive = pid_alive(int(match.group(3)))
            if step not in by_step and not alive and (entry / "manifest.json").exists():
                by_step[step] = entry
    return [by_step[step] for step in sorted(by_step)]


def verify_checkpoint(path: Path) -> dict[str, Any]:
    """Check every file against the manifest and every safetensors header; return meta.json.

    Any changed byte of any file is refused: the manifest must be byte-identical to the form
    :func:`save_checkpoint` writes, and each file must match its sha256. Raises CheckpointError.
    """
    path = Path(path)
    try:
        raw = (path / "manifest.json").read_bytes()
        manifest = json.loads(raw)
    except (OSError, ValueError, RecursionError) as err:
        raise CheckpointError(f"checkpoint {path} has no readable manifest.json ({err})") from None
    if not isinstance(manifest, dict) or set(manifest) != set(CHECKPOINT_FILES):
        expected = ", ".join(CHECKPOINT_FILES)
        raise CheckpointError(f"checkpoint {path} has a manifest.json that does not list {expected}")
    if _manifest_bytes(manifest) != raw:
        raise CheckpointError(f"checkpoint file {path / 'manifest.json'} has been modified")
    for name in CHECKPOINT_FILES:
        file = path / name
        if not file.is_file():
            raise CheckpointError(f"checkpoint {path} is missing {name}")
        if _sha256(file) != manifest[name]:
            raise CheckpointError(f"checkpoint file {file} does not match its manifest (corrupt or modified)")
    for name in TENSOR_FILES:
        try:
            read_safetensors_header(path / name)
        except UnsafeFileError as err:
            raise CheckpointError(f"checkpoint {path}: {err}") from None
    try:
        meta = json.loads((path / "meta.json").read_text("utf-8"))
    except (ValueError, RecursionError) as err:
        raise CheckpointError(f"checkpoint file {path / 'meta.json'} is not JSON ({err})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("step"), int):
        raise CheckpointError(f"checkpoint file {path / 'meta.json'} has no integer step")
    match = CHECKPOINT_PATTERN.match(path.name)
    if match and int(match.group(1)) != meta["step"]:
        raise CheckpointError(f"checkpoint {path} holds step {meta['step']}, not the step its name says")
    return meta


def load_checkpoint(path: Path, *, with_optimizer: bool = True) -> Checkpoint:
    """Load a verified checkpoint folder onto the CPU."""
    path = Path(path)
    meta = verify_checkpoint(path)
    try:
        tensors = {
            name: load_safetensors(path / f"{name}.safetensors")
            for name in ("model", "ema", "optimizer")
            if with_optimizer or name != "optimizer"
        }
    except UnsafeFileError as err:
        raise CheckpointError(f"checkpoint {path}: {err}") from None
    return Checkpoint(
        path=path,
        step=int(meta["step"]),
        meta=meta,
        model=tensors["model"],
        ema=tensors["ema"],
        optimizer=tensors.get("optimizer", {}),
    )


def latest_valid_checkpoint(run_dir: Path, warn: Any = print) -> Path | None:
    """The newest checkpoint that passes verification; says which ones it skipped."""
    for path in reversed(list_checkpoints(run_dir)):
        try:
            verify_checkpoint(path)
            return path
        except CheckpointError as err:
            warn(f"skipping {path.name}: {err}")
    return None


def assert_finite(tensors: dict[str, Tensor], what: str) -> None:
    for name, value in tensors.items():
        if value.dtype.is_floating_point and not torch.isfinite(value).all():
            raise ValueError(f"refusing to save {what}: tensor {name!r} has non-finite values")
