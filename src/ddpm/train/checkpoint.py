"""Checkpoints: safetensors for tensors, JSON for everything else, written atomically.

Layout of one checkpoint (a folder ``checkpoints/step_0001000/``)::

    model.safetensors      raw weights
    ema.safetensors        EMA weights
    optimizer.safetensors  AdamW moments, keyed state.<param index>.<name>
    meta.json              step, config, data fingerprint, EMA updates, optimizer hyperparameters
    manifest.json          sha256 of each file above, written last
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
from safetensors.torch import load_file, save_file
from torch import Tensor

CHECKPOINT_PATTERN = re.compile(r"^step_(\d{7,})$")
TENSOR_FILES = ("model.safetensors", "ema.safetensors", "optimizer.safetensors")


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


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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

    A crash at any moment leaves either the previous checkpoints untouched or the new one complete;
    older checkpoints are pruned only after the new one is in place.
    """
    final = checkpoint_dir(run_dir, step)
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}"
    final.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        opt_tensors, opt_rest = optimizer_to_tensors(optimizer)
        save_file(_cpu(model), tmp / "model.safetensors")
        save_file(_cpu(ema), tmp / "ema.safetensors")
        save_file(opt_tensors, tmp / "optimizer.safetensors")
        (tmp / "meta.json").write_text(json.dumps({**meta, "step": step, "optimizer": opt_rest}, indent=1))
        names = [*TENSOR_FILES, "meta.json"]
        for name in names:
            _fsync(tmp / name)
        manifest = {name: _sha256(tmp / name) for name in names}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
        _fsync(tmp / "manifest.json")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync(final.parent)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise OSError(f"could not write checkpoint {final}: {err.strerror or err}") from err
    for old in list_checkpoints(run_dir)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def mark_best(path: Path) -> Path:
    """Copy a complete checkpoint to ``checkpoints/best`` atomically (copy, then rename over)."""
    best = path.parent / "best"
    tmp = path.parent / f".tmp-best-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(path, tmp)
    old = path.parent / f".old-best-{os.getpid()}"
    if best.exists():
        os.replace(best, old)
    os.replace(tmp, best)
    shutil.rmtree(old, ignore_errors=True)
    return best


def _cpu(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in tensors.items()}


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoint folders (with a manifest), oldest first."""
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    found = [
        p for p in folder.iterdir() if CHECKPOINT_PATTERN.match(p.name) and (p / "manifest.json").exists()
    ]
    return sorted(found, key=lambda p: int(CHECKPOINT_PATTERN.match(p.name).group(1)))


def verify_checkpoint(path: Path) -> dict[str, Any]:
    """Check every file against the manifest; return meta.json. Raises CheckpointError."""
    path = Path(path)
    try:
        manifest = json.loads((path / "manifest.json").read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"checkpoint {path} has no readable manifest.json ({err})") from None
    for name in (*TENSOR_FILES, "meta.json"):
        file = path / name
        if not file.is_file():
            raise CheckpointError(f"checkpoint {path} is missing {name}")
        if _sha256(file) != manifest.get(name):
            raise CheckpointError(f"checkpoint file {file} does not match its manifest (corrupt or modified)")
    return json.loads((path / "meta.json").read_text())


def load_checkpoint(path: Path, *, with_optimizer: bool = True) -> Checkpoint:
    """Load a verified checkpoint folder onto the CPU."""
    path = Path(path)
    meta = verify_checkpoint(path)
    optimizer = load_file(path / "optimizer.safetensors") if with_optimizer else {}
    return Checkpoint(
        path=path,
        step=int(meta["step"]),
        meta=meta,
        model=load_file(path / "model.safetensors"),
        ema=load_file(path / "ema.safetensors"),
        optimizer=optimizer,
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
