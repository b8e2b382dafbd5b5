"""What a run directory holds, read tolerantly: config.toml, log.jsonl, eval.jsonl, samples/final.npz."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from ddpm.viz.curves import plot_eval_metrics, plot_training_curves, read_jsonl
from ddpm.viz.figures import save_figure
from ddpm.viz.schedule_plots import plot_schedules


@dataclass(frozen=True)
class RunInfo:
    """A run's resolved config (nested dict) and its training and evaluation records."""

    run_dir: Path
    config: dict[str, Any] = field(default_factory=dict)
    log: list[dict] = field(default_factory=list)
    evals: list[dict] = field(default_factory=list)

    def setting(self, key: str, default: Any = None, sections: tuple[str, ...] = ()) -> Any:
        """``config[section][key]`` from the first of ``sections`` that has it, else ``default``."""
        for section in sections:
            table = self.config.get(section, {})
            if isinstance(table, dict) and key in table:
                return table[key]
        return default


def load_run(run_dir: str | Path) -> RunInfo:
    """Read what exists of a run directory; missing files give empty parts, not errors."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ValueError(f"run directory {str(run_dir)!r} does not exist; give the --out of a `ddpm train`")
    config_path, log_path, eval_path = (run_dir / n for n in ("config.toml", "log.jsonl", "eval.jsonl"))
    try:
        config = tomllib.loads(config_path.read_text()) if config_path.is_file() else {}
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"{config_path} is not valid TOML: {err}") from None
    return RunInfo(
        run_dir=run_dir,
        config=config,
        log=read_jsonl(log_path) if log_path.is_file() else [],
        evals=read_jsonl(eval_path) if eval_path.is_file() else [],
    )


def load_samples_npz(path: str | Path) -> Tensor:
    """Samples of an .npz file: ``images`` (uint8 N×H×W×C) as (N, C, H, W) in [-1, 1], or ``points``."""
    with np.load(path, allow_pickle=False) as npz:  # never unpickle
        if "images" in npz:
            images = torch.from_numpy(npz["images"].astype(np.float32))
            images = images[..., None] if images.ndim == 3 else images
            return images.permute(0, 3, 1, 2) / 127.5 - 1
        if "points" in npz:
            return torch.from_numpy(npz["points"].astype(np.float32))
    raise ValueError(f"{path} holds neither 'images' nor 'points'; a samples file needs one of them")


def save_run_curves(run_dir: str | Path, out_dir: str | Path | None = None) -> list[Path]:
    """Write training curves, evaluation curves and the schedule plot of a run as PNGs.

    Files go to ``out_dir`` (default ``RUN_DIR/figures``): ``curves.png`` when the log has losses,
    ``eval.png`` when eval.jsonl has metrics, and ``schedule.png`` for the run's β schedule.
    """
    run = load_run(run_dir)
    out = Path(out_dir) if out_dir is not None else run.run_dir / "figures"
    written = []
    if any("loss" in r for r in run.log):
        written.append(save_figure(plot_training_curves(run.log), out / "curves.png"))
    if any(k != "step" for r in run.evals for k in r):
        written.append(save_figure(plot_eval_metrics(run.evals), out / "eval.png"))
    schedule = run.setting("schedule", "linear", ("diffusion",))
    num_steps = int(run.setting("num_steps", 1000, ("diffusion",)))
    written.append(save_figure(plot_schedules([schedule], num_steps), out / "schedule.png"))
    return written
