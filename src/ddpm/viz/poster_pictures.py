"""The pictures of a poster (:mod:`ddpm.viz.poster`): the sample grids, the forward and reverse strips, the
QR code, and a ControlNet run's controls | samples | real images with their adherence, each computed once
whatever the text size."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ddpm.diffusion import make_schedule
from ddpm.viz.editing import CONTROL_ROW_LABELS, control_cells
from ddpm.viz.grid import check_images
from ddpm.viz.guidelines import PageSpec
from ddpm.viz.poster_graphics import MAX_POINTS, Graphic, table_graphic
from ddpm.viz.poster_text import RunFacts, format_value
from ddpm.viz.process import (
    ImageTable,
    TrajectoryLike,
    default_forward_steps,
    forward_table,
    forward_trajectory,
    image_table,
    is_points,
    reverse_table,
    select_steps,
)
from ddpm.viz.qr import qr_pixels

SAMPLE_GRID_COLUMNS = 12  # a wide grid: the results column also holds the reverse strip and curves
SAMPLE_GRID_ROWS = (4, 6, 8)  # tried in turn; the layout that best follows the guidelines wins
FORWARD_ROWS, REVERSE_SAMPLES = 2, 1  # images in the forward strip; samples (two rows each) in the reverse


@dataclass(frozen=True)
class Pictures:
    """Everything expensive or data-dependent, computed once whatever the text size."""

    samples: list[ImageTable] | list[list[Tensor]]  # image grids (one per row count), or point panels
    sample_titles: list[str]
    forward: ImageTable | list[Tensor]
    forward_titles: list[str]
    reverse: ImageTable | list[list[Tensor]] | None
    reverse_titles: list[str]
    qr: ImageTable | None


def images_or_points(x: Tensor, name: str) -> Tensor:
    x = torch.as_tensor(x).detach().to("cpu", torch.float32)
    return x if is_points(x) else check_images(x, name)


def poster_pictures(
    samples: Tensor,
    data: Tensor | None,
    trajectory: Sequence[TrajectoryLike] | None,
    facts: RunFacts,
    url: str | None,
    seed: int,
) -> Pictures:
    schedule = make_schedule(facts.schedule, facts.num_steps)
    steps = default_forward_steps(facts.num_steps)
    generator = torch.Generator().manual_seed(seed)
    x0 = data if data is not None else samples
    if is_points(x0):
        forward = forward_trajectory(x0[:MAX_POINTS], schedule, steps, generator=generator)
    else:
        forward = forward_table(x0[:FORWARD_ROWS], schedule, steps, generator=generator)
    if is_points(samples):
        panels = [data, samples] if data is not None and is_points(data) else [samples]
        sample_titles = ["data", "samples"] if len(panels) == 2 else ["samples"]
        sample_pics: list = [panels]
    else:
        cols = min(SAMPLE_GRID_COLUMNS, samples.shape[0])
        row_counts = sorted({min(rows, samples.shape[0] // cols) for rows in SAMPLE_GRID_ROWS})
        grids = [samples[: rows * cols].reshape(rows, cols, *samples.shape[1:]) for rows in row_counts]
        sample_pics = [image_table(grid, padding=2) for grid in grids]
        sample_titles = []
    reverse, reverse_titles = None, []
    if trajectory:
        chosen = select_steps(trajectory)
        reverse_titles = [f"t = {s.t + 1}" for s in chosen]
        if is_points(chosen[0].x_t):
            reverse = [[s.x_t for s in chosen], [s.x0_pred for s in chosen]]
        else:
            reverse = reverse_table(chosen, REVERSE_SAMPLES)
    qr = None
    if url:
        modules = torch.from_numpy(qr_pixels(url).astype(np.float32) / 127.5 - 1)  # (H, W) in [-1, 1]
        qr = image_table(modules[None, None, None], padding=0)
    return Pictures(
        sample_pics, sample_titles, forward, [f"t = {s}" for s in steps], reverse, reverse_titles, qr
    )


# how the poster's table names each adherence level (ddpm.eval.adherence.adherence_levels' keys)
ADHERENCE_LEVELS = {"controlled": "controlled", "chance": "chance (base)", "ceiling": "ceiling (real)"}


@dataclass(frozen=True)
class ControlPanel:
    """A ControlNet run's part of the poster (Zhang, Rao & Agrawala 2023): held-out controls above the samples
    drawn with them and the real images they came from, and the adherence measured on such controls."""

    kind: str  # the run's control kind (canny, mask, lowres, gray or folder)
    controls: Tensor  # (K, c, H, W) in [-1, 1]: the controls shown
    samples: Tensor  # (K, C, H, W): sample i drawn with control i
    real: Tensor  # (K, C, H, W): the images the controls came from
    measure: str  # the adherence measure's name, e.g. "edge F1"
    levels: Mapping[str, float] | None  # mean per level (controlled, chance, ceiling); None: no measure
    n: int  # held-out images the adherence was measured on
    mode: str = "controlnet"  # or concat: a U-Net from scratch on [x_t, control], chance = control dropped

    def caption(self) -> str:
        shown = len(self.controls)
        name = "Concat-control U-Net" if self.mode == "concat" else "ControlNet"
        text = (f"{name} ({self.kind}): controls of held-out images (top), samples drawn with them "
                f"(middle), the real images (bottom); {shown} of the {self.n} measured.")  # fmt: skip
        return text if self.levels is not None else f"{text} Users' own controls have no adherence measure."

    def picture(self, page: PageSpec, final_dpi: float) -> Graphic:
        """Block ``control``: rows control | sample | real, one column per control."""
        table = image_table(control_cells(self.controls, self.samples, self.real), [], CONTROL_ROW_LABELS)
        return table_graphic("control", table, page, final_dpi)

    def rows(self) -> list[tuple[str, str]]:
        """Rows of the poster's table of values: the measure at each level, and on how many images."""
        if self.levels is None:
            return []
        names = dict(ADHERENCE_LEVELS, **({"chance": "chance (dropped)"} if self.mode == "concat" else {}))
        rows = [(f"{self.measure}, {names.get(k, k)}", format_value(v)) for k, v in self.levels.items()]
        return [*rows, ("held-out controls", format_value(self.n))]
