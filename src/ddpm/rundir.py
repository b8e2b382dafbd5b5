"""The one owner of a run directory's layout, and of reading the checkpoints inside it.

A run directory (``ddpm train --out RUN_DIR``)::

    config.toml            the resolved training config
    log.jsonl              one JSON record per logged training step
    eval.jsonl             one JSON record per evaluation during training
    checkpoints/step_NNNNNNN/   complete checkpoints (see below); checkpoints/best/ the best evaluated
    samples/               step_NNNNNNN.png previews, final.png and final.npz (the samples file)
    figures/               curves and plots written by ``ddpm report``

One checkpoint folder::

    model.safetensors      raw weights
    ema.safetensors        EMA weights
    optimizer.safetensors  AdamW moments (read and written by :mod:`ddpm.train.checkpoint`)
    meta.json              step, config, data fingerprint, EMA updates, counters, optimizer hyperparameters
                           (``train_time_s``: training seconds so far, over resumes)
                           (an autoencoder run's: also ``latent_stats``, its latents' per-channel mean, std)
    manifest.json          sha256 of each file above, written last

This module reads; :mod:`ddpm.train.checkpoint` writes (atomically) with the names defined here. It
sits at the bottom of the package: viz, eval, model, train and the commands all use it.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import Tensor

from ddpm.configio import read_toml
from ddpm.safe_files import UnsafeFileError, load_safetensors, pid_alive, read_safetensors_header

if sys.version_info >= (3, 11):
    pass
else:  # pragma: no cover
    pass

CHECKPOINT_PATTERN = re.compile(r"^step_(\d{7,})$")
SCRATCH_PATTERN = re.compile(r"^\.(tmp|old|del)-(.+)-(\d+)$")  # .tmp-step_0000010-<pid>, .old-best-<pid>
MANIFEST = "manifest.json"
META = "meta.json"
WEIGHTS = ("model", "ema")  # the tensor files a model is loaded from; the optimizer's is the trainer's
OPTIMIZER_FILE = "optimizer.safetensors"  # read and written by ddpm.train.checkpoint only
TENSOR_FILES = ("model.safetensors", "ema.safetensors", OPTIMIZER_FILE)
CHECKPOINT_FILES = (*TENSOR_FILES, META)  # listed in manifest.json


class CheckpointError(ValueError):
    """A checkpoint that is missing, incomplete or does not match its manifest."""


def step_name(step: int) -> str:
    """``step_NNNNNNN``: the name of a step's checkpoint folder and preview picture."""
    return f"step_{step:07d}"


class RunDir:
    """The files of one run directory, by name; nothing is read or created until asked."""

    CONFIG = "config.toml"
    LOG = "log.jsonl"
    EVAL = "eval.jsonl"
    CHECKPOINTS = "checkpoints"
    SAMPLES = "samples"
    FIGURES = "figures"
    BEST = "best"  # checkpoints/best: the best evaluated checkpoint
    FINAL_PNG = "final.png"
    FINAL_NPZ = "final.npz"
    RUN_FILES = (CONFIG, LOG, EVAL, CHECKPOINTS, SAMPLES)  # any of them means "a run lives here"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._config: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RunDir) and other.path == self.path

    def __hash__(self) -> int:
        return hash(self.path)

    @property
    def config_path(self) -> Path:
        return self.path / self.CONFIG

    @property
    def log_path(self) -> Path:
        return self.path / self.LOG

    @property
    def eval_path(self) -> Path:
        return self.path / self.EVAL

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / self.CHECKPOINTS

    @property
    def best_checkpoint_dir(self) -> Path:
        return self.checkpoints_dir / self.BEST

    @property
    def samples_dir(self) -> Path:
        return self.path / self.SAMPLES

    @property
    def figures_dir(self) -> Path:
        return self.path / self.FIGURES

    @property
    def final_samples_png(self) -> Path:
        return self.samples_dir / self.FINAL_PNG

    @property
    def final_samples_npz(self) -> Path:
        return self.samples_dir / self.FINAL_NPZ

    def preview_png(self, step: int) -> Path:
        return self.samples_dir / f"{step_name(step)}.png"

    def checkpoint_dir(self, step: int) -> Path:
        return self.checkpoints_dir / step_name(step)

    def holds_run(self) -> bool:
        """Whether any file of a run is here (so a new run would overwrite one)."""
        return any((self.path / name).exists() for name in self.RUN_FILES)

    def config_dict(self) -> dict[str, Any]:
        """config.toml as nested dicts, read once per RunDir. Raises ValueError naming the file."""
        if self._config is None:
            self._config = read_toml(self.config_path)
        return self._config

    def log_records(self) -> list[dict]:
        """The records of log.jsonl (none if it is absent); see :func:`read_jsonl`."""
        return read_jsonl(self.log_path) if self.log_path.is_file() else []

    def eval_records(self) -> list[dict]:
        """The records of eval.jsonl (none if it is absent); see :func:`read_jsonl`."""
        return read_jsonl(self.eval_path) if self.eval_path.is_file() else []

    def checkpoints(self) -> list[Path]:
        """Complete checkpoint folders (with a manifest), oldest first.

        A step whose folder is missing but whose aside copy ``.old-step_N-<pid>`` of a dead process
        exists (a crash between the two renames of a re-save) is served by that copy.
        """
        folder = self.checkpoints_dir
        if not folder.is_dir():
            return []
        by_step = {checkpoint_step(p): p for p in complete_checkpoints(folder)}
        for entry in folder.iterdir():
            match = SCRATCH_PATTERN.match(entry.name)
            if match and match.group(1) == "old" and CHECKPOINT_PATTERN.match(match.group(2)):
                step = checkpoint_step(entry)
                alive = pid_alive(int(match.group(3)))
                if step not in by_step and not alive and (entry / MANIFEST).exists():
                    by_step[step] = entry
        return [by_step[step] for step in sorted(by_step)]

    def latest_checkpoint(self, warn: Callable[[str], Any] = print) -> Path | None:
        """The newest checkpoint that passes verification; says (through ``warn``) which it skipped."""
        for path in reversed(self.checkpoints()):
            try:
                verify_checkpoint(path)
                return path
            except CheckpointError as err:
                warn(f"skipping {path.name}: {err}")
        return None


def resolve_checkpoint(path: str | Path, warn: Callable[[str], Any] = print) -> tuple[RunDir | None, Path]:
    """A run directory (→ itself and its newest valid checkpoint) or a checkpoint folder (→ its run
    directory when it sits in one's ``checkpoints/``, else None, and itself).

    The checkpoint returned has passed :func:`verify_checkpoint`; read it with
    :func:`read_checkpoint_meta` and :func:`read_weights` without verifying again.
    """
    path = Path(path)
    if (path / MANIFEST).is_file():
        verify_checkpoint(path)
        run = RunDir(path.parent.parent)
        in_run = path.parent.name == RunDir.CHECKPOINTS and run.holds_run()
        return (run if in_run else None), path
    run = RunDir(path)
    if run.checkpoints_dir.is_dir():
        found = run.latest_checkpoint(warn)
        if found is None:
            raise CheckpointError(f"run directory {path} has no complete checkpoint yet")
        return run, found
    raise CheckpointError(f"{str(path)!r} is neither a run directory nor a checkpoint folder")


def weights_sha256(checkpoint: str | Path, which: str = "ema") -> str:
    """sha256 of the ``model`` (raw) or ``ema`` weights of a checkpoint folder, as its manifest records
    it (verify the folder first): what a latent run records of the autoencoder it was trained on."""
    manifest = json.loads((Path(checkpoint) / MANIFEST).read_text("ascii"))
    return manifest[f"{which}.safetensors"]


def checkpoint_with_weights(run: RunDir, sha256: str, which: str = "ema") -> Path | None:
    """The newest verified checkpoint of ``run`` whose ``which`` weights have ``sha256``, or None: how a run
    built on another (a latent run on its autoencoder) finds the exact weights it was trained with."""
    for checkpoint in reversed(run.checkpoints()):
        try:
            verify_checkpoint(checkpoint)
        except CheckpointError:
            continue
        if weights_sha256(checkpoint, which) == sha256:
            return checkpoint
    return None


def autoencoder_checkpoint(path: str | Path, sha256: str = "") -> Path:
    """The verified checkpoint of autoencoder run ``path`` whose EMA weights have ``sha256`` (the newest
    one when ``sha256`` is ""). Raises CheckpointError in one line when ``path`` is missing, is not an
    autoencoder run (``ddpm train --kind autoencoder``), or no longer holds those weights."""
    run = RunDir(path)
    if not run.path.is_dir():
        raise CheckpointError(f"autoencoder run {str(path)!r} does not exist; train one with "
                              "ddpm train --kind autoencoder")  # fmt: skip
    kind = run.config_dict().get("model", {}).get("kind", "unet") if run.config_path.is_file() else None
    if kind != "autoencoder":
        what = "holds no run (no config.toml)" if kind is None else f"is a run of model.kind = {kind!r}"
        raise CheckpointError(f"{str(path)!r} {what}, not an autoencoder run; give a run of "
                              "ddpm train --kind autoencoder")  # fmt: skip
    if not sha256:
        found = run.latest_checkpoint()
        if found is None:
            raise CheckpointError(f"autoencoder run {str(path)!r} has no complete checkpoint yet")
        return found
    found = checkpoint_with_weights(run, sha256)
    if found is not None:
        return found
    raise CheckpointError(
        f"autoencoder run {str(path)!r} has changed: none of its checkpoints holds the weights (sha256 "
        f"{sha256[:12]}…) the latent run was trained on; train the latent run again on it"
    )


def checkpoint_step(path: str | Path) -> int:
    """N of a checkpoint folder ``step_N``, or of its aside copy ``.old-step_N-<pid>``."""
    name = Path(path).name
    scratch = SCRATCH_PATTERN.match(name)
    match = CHECKPOINT_PATTERN.match(scratch.group(2) if scratch else name)
    if match is None:
        raise ValueError(f"{name!r} is not a checkpoint folder name (step_NNNNNNN)")
    return int(match.group(1))


def complete_checkpoints(folder: Path) -> list[Path]:
    """The ``step_N`` folders of a ``checkpoints/`` folder that have a manifest, oldest first."""
    found = [p for p in folder.iterdir() if CHECKPOINT_PATTERN.match(p.name) and (p / MANIFEST).is_file()]
    return sorted(found, key=checkpoint_step)


def manifest_bytes(manifest: dict[str, str]) -> bytes:
    """The one byte form of a manifest; any other bytes (even equal JSON) count as modified."""
    return json.dumps(manifest, indent=1).encode("ascii")


def verify_checkpoint(path: str | Path) -> dict[str, Any]:
    """Check every file against the manifest and every safetensors header; return meta.json.

    Any changed byte of any file is refused: the manifest must be byte-identical to the form
    :func:`manifest_bytes` gives, and each file must match its sha256. Raises CheckpointError.
    """
    path = Path(path)
    try:
        raw = (path / MANIFEST).read_bytes()
        manifest = json.loads(raw)
    except (OSError, ValueError, RecursionError) as err:
        raise CheckpointError(f"checkpoint {path} has no readable manifest.json ({err})") from None
    if not isinstance(manifest, dict) or set(manifest) != set(CHECKPOINT_FILES):
        expected = ", ".join(CHECKPOINT_FILES)
        raise CheckpointError(f"checkpoint {path} has a manifest.json that does not list {expected}")
    if manifest_bytes(manifest) != raw:
        raise CheckpointError(f"checkpoint file {path / MANIFEST} has been modified")
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
    return read_checkpoint_meta(path)


def read_checkpoint_meta(path: str | Path) -> dict[str, Any]:
    """meta.json of a checkpoint, checked for an integer step that agrees with the folder's name.

    Reads that one file: call :func:`verify_checkpoint` (which ends here) to check the whole folder.
    """
    path = Path(path)
    try:
        meta = json.loads((path / META).read_text("utf-8"))
    except (ValueError, RecursionError) as err:
        raise CheckpointError(f"checkpoint file {path / META} is not JSON ({err})") from None
    except OSError as err:
        raise CheckpointError(f"checkpoint {path} has no readable {META} ({err})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("step"), int):
        raise CheckpointError(f"checkpoint file {path / META} has no integer step")
    match = CHECKPOINT_PATTERN.match(path.name)
    if match and int(match.group(1)) != meta["step"]:
        raise CheckpointError(f"checkpoint {path} holds step {meta['step']}, not the step its name says")
    return meta


def read_weights(path: str | Path, which: str = "ema") -> dict[str, Tensor]:
    """The ``model`` (raw) or ``ema`` weights of a checkpoint folder, on the CPU.

    Checks the file's safetensors header, not the manifest: verify the folder first.
    """
    if which not in WEIGHTS:
        raise ValueError(f"weights {which!r} are not allowed; choose {' or '.join(WEIGHTS)}")
    return read_tensor_file(Path(path), f"{which}.safetensors")


def read_tensor_file(path: Path, name: str) -> dict[str, Tensor]:
    """The tensors of one safetensors file of checkpoint ``path``; a refused file is a CheckpointError."""
    try:
        return load_safetensors(path / name)
    except UnsafeFileError as err:
        raise CheckpointError(f"checkpoint {path}: {err}") from None


def read_jsonl(path: str | Path) -> list[dict]:
    """Records of a JSON-lines file; blank lines are skipped, and so is a cut-off last line (a
    log being written). Any other malformed line raises ValueError naming file and line."""
    path = Path(path)
    lines = path.read_text().splitlines()
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):
                break
            raise ValueError(f"{path}:{number} is not a JSON object; each line must be one") from None
        if not isinstance(record, dict):
            raise ValueError(f"{path}:{number} is not a JSON object; each line must be one")
        records.append(record)
    return records


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
