"""What a run directory holds, read tolerantly: config.toml, log.jsonl, eval.jsonl, samples/final.npz."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ddpm.rundir import RunDir
from ddpm.viz.curves import plot_eval_metrics, plot_training_curves
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
    run = RunDir(run_dir)
    if not run.path.is_dir():
        raise ValueError(f"run directory {str(run.path)!r} does not exist; give the --out of a `ddpm train`")
    return RunInfo(
        run_dir=run.path,
        config=run.config_dict() if run.config_path.is_file() else {},
        log=run.log_records(),
        evals=run.eval_records(),
    )


def save_run_curves(run_dir: str | Path, out_dir: str | Path | None = None) -> list[Path]:
    """Write training curves, evaluation curves and the schedule plot of a run as PNGs.

    Files go to ``out_dir`` (default ``RUN_DIR/figures``): ``curves.png`` when the log has losses,
    ``eval.png`` when eval.jsonl has metrics, and ``schedule.png`` for the run's β schedule (none for an
    autoencoder run, which has no diffusion).
    """
    run = load_run(run_dir)
    out = Path(out_dir) if out_dir is not None else RunDir(run.run_dir).figures_dir
    written = []
    if any("loss" in r for r in run.log):
        written.append(save_figure(plot_training_curves(run.log), out / "curves.png"))
    if any(k != "step" for r in run.evals for k in r):
        written.append(save_figure(plot_eval_metrics(run.evals), out / "eval.png"))
    if run.setting("kind", sections=("model",)) == "autoencoder":
        return written
    schedule = run.setting("schedule", "linear", ("diffusion",))
    num_steps = int(run.setting("num_steps", 1000, ("diffusion",)))
    written.append(save_figure(plot_schedules([schedule], num_steps), out / "schedule.png"))
    return written
