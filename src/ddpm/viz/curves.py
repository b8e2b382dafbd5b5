"""Training and evaluation curves from a run's ``log.jsonl`` / ``eval.jsonl``; quality vs sampler steps."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib import ticker
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ddpm.viz.figures import new_figure

LOSS_SMOOTHING = 0.98  # EMA decay of the smoothed loss curve (about the last 50 log lines)
TRAINING_SERIES = (  # (log.jsonl key, axis label) of the panels after the loss
    ("lr", "learning rate"),
    ("grad_norm", "gradient norm"),
    ("img_per_s", "images / s"),
)


def ema_smooth(values: Sequence[float], decay: float = LOSS_SMOOTHING) -> np.ndarray:
    """Exponential moving average with bias correction: s_k = Σ decayᵏ⁻ʲ v_j / Σ decayᵏ⁻ʲ."""
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"decay={decay} must be in [0, 1)")
    out, acc, weight = np.empty(len(values)), 0.0, 0.0
    for k, v in enumerate(values):
        acc, weight = decay * acc + (1 - decay) * v, decay * weight + (1 - decay)
        out[k] = acc / weight
    return out


def smoothing_decay(num_points: int, smoothing: float = LOSS_SMOOTHING) -> float:
    """EMA decay for a curve of ``num_points``: at most ``smoothing``, and an averaging window of at
    most a tenth of the points, so a short log is not dominated by its first, high losses."""
    return min(smoothing, max(0.0, 1.0 - 10.0 / num_points))


def series(records: Sequence[Mapping], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of ``key`` over records that have both ``step`` and a finite ``key``."""
    pairs = [
        (r["step"], r[key])
        for r in records
        if "step" in r and isinstance(r.get(key), (int, float)) and math.isfinite(r[key])
    ]
    steps, values = zip(*pairs, strict=True) if pairs else ((), ())
    return np.asarray(steps, dtype=float), np.asarray(values, dtype=float)


def plain_log_ticks(ax: Axes, axis: str = "y") -> None:
    """Log-axis tick labels as plain numbers ("0.01"), one font size, no super/subscripts."""
    target = ax.yaxis if axis == "y" else ax.xaxis
    target.set_major_formatter(ticker.FormatStrFormatter("%g"))
    target.set_minor_formatter(ticker.NullFormatter())


def draw_loss(ax: Axes, records: Sequence[Mapping], smoothing: float = LOSS_SMOOTHING) -> None:
    """Raw loss (faint) and its bias-corrected EMA against step, on a log axis when positive."""
    steps, loss = series(records, "loss")
    if len(loss) == 0:
        raise ValueError("no 'loss' values in the log; each line needs 'step' and 'loss'")
    ax.plot(steps, loss, color="C0", alpha=0.3, label="loss")
    ax.plot(steps, ema_smooth(loss, smoothing_decay(len(loss), smoothing)), color="C0", label="smoothed")
    if (loss > 0).all():
        ax.set_yscale("log")
        plain_log_ticks(ax)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend(frameon=False)


def draw_series(ax: Axes, records: Sequence[Mapping], key: str, label: str) -> bool:
    """``key`` against step; returns False (and leaves a note) when the log has no such values."""
    steps, values = series(records, key)
    if len(values) == 0:
        ax.text(0.5, 0.5, f"no {label}", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return False
    ax.plot(steps, values, color="C1")
    ax.yaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))  # 0.0002, not 0.000200
    ax.set_xlabel("step")
    ax.set_ylabel(label)
    return True


def plot_training_curves(records: Sequence[Mapping], smoothing: float = LOSS_SMOOTHING) -> Figure:
    """2 × 2 panels from log.jsonl records: loss (raw and smoothed), lr, gradient norm, images/s."""
    fig = new_figure(10, 7)
    axes = fig.subplots(2, 2).ravel()
    draw_loss(axes[0], records, smoothing)
    for ax, (key, label) in zip(axes[1:], TRAINING_SERIES, strict=True):
        draw_series(ax, records, key, label)
    fig.tight_layout()
    return fig


def metric_names(records: Sequence[Mapping]) -> list[str]:
    """Numeric keys of eval.jsonl records other than ``step``, in first-seen order."""
    names: dict[str, None] = {}
    for r in records:
        for k, v in r.items():
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool):
                names[k] = None
    return list(names)


def draw_metric(
    ax: Axes, records: Sequence[Mapping], name: str, *, xlabel: str = "step", markersize: float | None = None
) -> None:
    """Evaluation metric ``name`` of eval.jsonl records against training step."""
    steps, values = series(records, name)
    ax.plot(steps, values, marker="o", color="C2", markersize=markersize)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(name)


def plot_eval_metrics(records: Sequence[Mapping]) -> Figure:
    """One panel per metric of eval.jsonl records, against training step."""
    names = metric_names(records)
    if not names:
        raise ValueError("no metrics in the eval records; each line needs 'step' and numeric metrics")
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig = new_figure(4 * cols, 3.2 * rows)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, name in zip(axes, names, strict=False):
        draw_metric(ax, records, name)
    for ax in axes[len(names) :]:
        ax.set_axis_off()
    fig.tight_layout()
    return fig


def draw_quality_vs_steps(ax: Axes, results: Mapping[str, Mapping[int, float]], metric: str) -> None:
    """One line per sampler: ``metric`` against the number of sampler steps (log axis)."""
    if not results or not any(results.values()):
        raise ValueError("results is empty; give {sampler: {steps: value}} with at least one value")
    for name, by_steps in results.items():
        steps = sorted(by_steps)
        ax.plot(steps, [by_steps[s] for s in steps], marker="o", label=name)
    ax.set_xscale("log")
    plain_log_ticks(ax, "x")
    ax.set_xlabel("sampler steps")
    ax.set_ylabel(metric)
    ax.legend(frameon=False)


def plot_quality_vs_steps(results: Mapping[str, Mapping[int, float]], metric: str = "quality") -> Figure:
    """Sample quality against sampler steps, e.g. ``{"ddpm": {1000: 3.2}, "ddim": {10: 9.1, 50: 4.0}}``."""
    fig = new_figure(6, 4)
    draw_quality_vs_steps(fig.subplots(), results, metric)
    fig.tight_layout()
    return fig
