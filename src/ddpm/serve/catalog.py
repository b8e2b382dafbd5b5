"""The runs a server may serve, found once at start in the folder it was given, each named by an opaque id.

No request path reaches the file system: a request names an id, and only this list maps ids to folders.
Every file read for a run (config, logs, checkpoints, figures) is checked to resolve inside the served
folder, so a symlink out of it is refused; nothing here writes.
"""

from __future__ import annotations

import hashlib
import io
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ddpm.command_support import open_run
from ddpm.data import load_dataset
from ddpm.diffusion.samplers import SAMPLERS
from ddpm.model import DiffusionModel, SamplingConfig
from ddpm.rundir import RunDir, checkpoint_step, read_checkpoint_meta
from ddpm.serve.controls import control_summary

SEARCH_DEPTH = 2  # runs are looked for in the folder, its children and grandchildren
MAX_RUNS = 200  # more than this many runs in one folder: the first ones, by name
POSTER_NAMES = ("poster.png", "figures/poster.png", "poster.pdf", "figures/poster.pdf")
CURVES_NAME = "figures/curves.png"


class UnknownRun(LookupError):
    """A run id this server does not have."""


def inside(path: Path, root: Path) -> bool:
    """Whether ``path`` resolves (symlinks followed) to ``root`` or below it."""
    try:
        return path.resolve().is_relative_to(root)
    except (OSError, RuntimeError):  # a symlink loop
        return False


def find_runs(root: Path) -> list[Path]:
    """Run directories (with a checkpoint) at ``root`` or up to SEARCH_DEPTH folders below it, by name;
    folders whose real path leaves ``root`` are skipped."""
    found: list[Path] = []
    frontier = [root]
    for _ in range(SEARCH_DEPTH + 1):
        following: list[Path] = []
        for folder in frontier:
            if not inside(folder, root) or not folder.is_dir():
                continue
            if RunDir(folder).checkpoints():
                found.append(folder)
                continue
            following += sorted(child for child in folder.iterdir() if not child.name.startswith("."))
        frontier = following
    return sorted(found)[:MAX_RUNS]


@dataclass(frozen=True)
class RunEntry:
    """One served run: its opaque id, a display name and its folder (inside the served root)."""

    run_id: str
    name: str
    path: Path

    @property
    def run_dir(self) -> RunDir:
        return RunDir(self.path)


class RunCatalog:
    """The served runs by id, their summaries, and a small cache of loaded models."""

    def __init__(self, root: str | Path, *, device: str = "cpu", max_loaded: int = 2) -> None:
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise ValueError(f"{str(root)!r} is not a folder; give a run directory or a folder of runs")
        self.device = device
        self.max_loaded = max_loaded
        self._models: OrderedDict[str, DiffusionModel] = OrderedDict()
        self._lock = threading.Lock()
        self.entries: dict[str, RunEntry] = {}
        for path in find_runs(self.root):
            name = str(path.relative_to(self.root)) if path != self.root else path.name
            run_id = hashlib.sha256(name.encode()).hexdigest()[:12]
            self.entries[run_id] = RunEntry(run_id, name, path)
        if not self.entries:
            raise ValueError(f"no run with a checkpoint in {str(root)!r}; train one with `ddpm train`")

    def get(self, run_id: str) -> RunEntry:
        """The run with this id; any other string (a path, ``..``) is an unknown run."""
        entry = self.entries.get(run_id)
        if entry is None:
            raise UnknownRun(f"no run with id {run_id[:40]!r}; the list at /api/runs has the served ones")
        return entry

    def file(self, run_id: str, relative: str) -> Path | None:
        """A fixed file of a run (``relative`` comes from this module, never from a request) if it exists
        and resolves inside the served folder."""
        path = self.get(run_id).path / relative
        return path if path.is_file() and inside(path, self.root) else None

    def latest_checkpoint(self, entry: RunEntry) -> Path:
        """The run's newest complete checkpoint, refused if it resolves outside the served folder."""
        checkpoints = entry.run_dir.checkpoints()
        if not checkpoints or not inside(checkpoints[-1], self.root):
            raise UnknownRun(f"run {entry.name!r} has no checkpoint inside the served folder")
        return checkpoints[-1]

    def summary(self, entry: RunEntry) -> dict[str, Any]:
        """What the page shows of a run: data, preset, steps trained, quality, its sampler, classes."""
        checkpoint = self.latest_checkpoint(entry)
        meta = read_checkpoint_meta(checkpoint)
        config = meta.get("config", {})
        sampling = SamplingConfig.from_run_section(config.get("run", {}))
        evals = entry.run_dir.eval_records() if self.file(entry.run_id, RunDir.EVAL) else []
        quality = {k: v for k, v in (evals[-1] if evals else {}).items() if isinstance(v, (int, float))}
        log = entry.run_dir.log_records() if self.file(entry.run_id, RunDir.LOG) else []
        return {
            "id": entry.run_id,
            "name": entry.name,
            "data": config.get("data", {}).get("spec", "?"),
            "preset": _preset_name(config),
            "network": config.get("model", {}).get("kind", "?"),
            "steps_trained": checkpoint_step(checkpoint),
            "kind": meta.get("kind", "?"),
            "sample_shape": meta.get("sample_shape"),
            "num_classes": config.get("model", {}).get("num_classes"),
            "quality": quality,
            "sampler": sampling.sampler,
            "steps": sampling.steps or 50,
            "samplers": list(SAMPLERS),
            "has_curves": any("loss" in r for r in log) or self.file(entry.run_id, CURVES_NAME) is not None,
            "poster": self.poster_kind(entry.run_id),
            "control": control_summary(config, self.root),  # None unless a ControlNet or concat run
        }

    def summaries(self) -> list[dict[str, Any]]:
        """Every served run's summary, by name; a run that cannot be read says why instead."""
        out = []
        for entry in self.entries.values():
            try:
                out.append(self.summary(entry))
            except (ValueError, OSError, LookupError) as err:
                out.append({"id": entry.run_id, "name": entry.name, "error": " ".join(str(err).split())})
        return out

    def model(self, run_id: str) -> DiffusionModel:
        """The run's model (EMA weights of its newest checkpoint), loaded once and kept for the last few."""
        entry = self.get(run_id)
        with self._lock:
            if run_id in self._models:
                self._models.move_to_end(run_id)
                return self._models[run_id]
            self.latest_checkpoint(entry)
            model = open_run(entry.path, device=self.device).model
            self._models[run_id] = model
            while len(self._models) > self.max_loaded:
                self._models.popitem(last=False)
            return model

    def poster_kind(self, run_id: str) -> str | None:
        """``png`` or ``pdf`` when the run holds a poster (``ddpm report RUN --out RUN/poster.png``)."""
        path = self.poster(run_id)
        return None if path is None else path.suffix.lstrip(".")

    def poster(self, run_id: str) -> Path | None:
        return next((p for name in POSTER_NAMES if (p := self.file(run_id, name))), None)

    def curves_png(self, run_id: str) -> bytes | None:
        """The run's training curves: its figures/curves.png, else drawn from log.jsonl; None without."""
        stored = self.file(run_id, CURVES_NAME)
        if stored is not None:
            return stored.read_bytes()
        if self.file(run_id, RunDir.LOG) is None:
            return None
        records = self.get(run_id).run_dir.log_records()
        if not any("loss" in r for r in records):
            return None
        from ddpm.viz.curves import plot_training_curves

        buffer = io.BytesIO()
        plot_training_curves(records).savefig(buffer, format="png", dpi=60)
        return buffer.getvalue()

    def real_images(self, run_id: str, count: int) -> Tensor:
        """The first ``count`` test images of the run's data set (built-in data sets only), in [-1, 1]."""
        summary = self.summary(self.get(run_id))
        spec = str(summary["data"])
        if ":" in spec or summary["kind"] != "images":
            raise ValueError(f"run {summary['name']!r} trains on {spec!r}: upload an image instead")
        dataset = load_dataset(spec, split="test")
        images = dataset.batch(torch.arange(min(count, len(dataset))))
        if tuple(images.shape[1:]) != tuple(summary["sample_shape"]):
            raise ValueError(f"the {spec} test images do not have this run's shape; upload an image instead")
        return images


def _preset_name(config: dict[str, Any]) -> str:
    """The preset a run's data set trains with by default (runs record the resolved config, not a name)."""
    from ddpm.train.presets import preset_for_data

    try:
        return preset_for_data(str(config.get("data", {}).get("spec", "")))
    except ValueError:
        return "custom"
