"""Pictures of diffusion: image grids, forward and reverse process strips, animations, curves,
schedule plots, and a poster of a run laid out by the lecture's guidelines (:mod:`ddpm.viz.guidelines`).

Everything draws on matplotlib figures without pyplot, so it is safe in scripts, workers and tests.
Images are float tensors in [-1, 1] shaped (N, C, H, W) with C = 1 or 3; 2-D data are (N, 2) points.
"""

from ddpm.viz.animate import find_video_encoder, reverse_frames, save_reverse_gif, save_reverse_mp4
from ddpm.viz.curves import (
    ema_smooth,
    plot_eval_metrics,
    plot_quality_vs_steps,
    plot_training_curves,
)
from ddpm.viz.figures import figure_to_array, new_figure, save_figure
from ddpm.viz.grid import make_grid, save_grid, to_uint8, upscale_nearest
from ddpm.viz.layout import Box, PosterLayout
from ddpm.viz.poster import make_poster, render_poster
from ddpm.viz.poster_pictures import ControlPanel
from ddpm.viz.poster_text import PosterText
from ddpm.viz.process import (
    DEFAULT_FORWARD_STEPS,
    TrajectoryLike,
    default_forward_steps,
    forward_strip,
    forward_trajectory,
    reverse_strip,
)
from ddpm.viz.run_files import RunInfo, load_run, save_run_curves
from ddpm.viz.schedule_plots import plot_schedules

__all__ = [
    "DEFAULT_FORWARD_STEPS",
    "Box",
    "ControlPanel",
    "PosterLayout",
    "PosterText",
    "RunInfo",
    "TrajectoryLike",
    "default_forward_steps",
    "ema_smooth",
    "figure_to_array",
    "find_video_encoder",
    "forward_strip",
    "forward_trajectory",
    "load_run",
    "make_grid",
    "make_poster",
    "new_figure",
    "plot_eval_metrics",
    "plot_quality_vs_steps",
    "plot_schedules",
    "plot_training_curves",
    "render_poster",
    "reverse_frames",
    "reverse_strip",
    "save_figure",
    "save_grid",
    "save_reverse_gif",
    "save_reverse_mp4",
    "save_run_curves",
    "to_uint8",
    "upscale_nearest",
]
