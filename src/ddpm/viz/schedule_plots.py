"""Noise schedules side by side: β_t, ᾱ_t and log SNR(t) = log(ᾱ_t / (1 − ᾱ_t)) (Kingma et al. 2021)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ddpm.diffusion import NoiseSchedule, make_schedule
from ddpm.viz.curves import plain_log_ticks
from ddpm.viz.figures import new_figure

SCHEDULE_PANELS = ("β(t)", "ᾱ(t)", "log SNR(t)")  # one-size labels: no mathtext scripts


def resolve_schedules(
    schedules: Mapping[str, NoiseSchedule] | Sequence[str], num_steps: int = 1000
) -> dict[str, NoiseSchedule]:
    """Named schedules: a mapping as given, or names built with ``make_schedule(name, num_steps)``."""
    if isinstance(schedules, str):
        schedules = [schedules]
    if not isinstance(schedules, Mapping):
        schedules = {name: make_schedule(name, num_steps) for name in schedules}
    if not schedules:
        raise ValueError("schedules is empty; give names such as 'linear', 'cosine', 'sigmoid'")
    return dict(schedules)


def draw_schedules(axes: Sequence[Axes], schedules: Mapping[str, NoiseSchedule], legend: bool = True) -> None:
    """β_t (log axis), ᾱ_t and log SNR(t) against the paper step t = 1 … T on three axes."""
    for name, schedule in schedules.items():
        t = np.arange(1, schedule.num_steps + 1)
        axes[0].plot(t, schedule.betas.numpy(), label=name)
        axes[1].plot(t, schedule.alpha_bar.numpy(), label=name)
        axes[2].plot(t, schedule.snr.log().numpy(), label=name)
    axes[0].set_yscale("log")
    plain_log_ticks(axes[0])
    for ax, label in zip(axes, SCHEDULE_PANELS, strict=True):
        ax.set_xlabel("t")
        ax.set_ylabel(label)
    if legend:
        axes[1].legend(frameon=False)


def plot_schedules(
    schedules: Mapping[str, NoiseSchedule] | Sequence[str] = ("linear", "cosine", "sigmoid"),
    num_steps: int = 1000,
) -> Figure:
    """Three panels, β_t, ᾱ_t and log SNR, one line per schedule."""
    fig = new_figure(12, 3.6)
    draw_schedules(fig.subplots(1, 3), resolve_schedules(schedules, num_steps))
    fig.tight_layout()
    return fig
