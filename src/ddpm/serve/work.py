"""What a job does: sample or inpaint through the model's own paths, streaming x_t and x̂₀ as it goes.

Frames are PNG grids sent as data URLs a few times per run (at most MAX_FRAMES), progress as the percent
of steps done; the result is one PNG grid whose text chunks say how to cut it back into its images
(``ddpm:count``, ``ddpm:columns``, ``ddpm:tile``, ``ddpm:padding``).
"""

from __future__ import annotations

import base64
import io
import itertools
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, PngImagePlugin
from torch import Tensor

from ddpm.diffusion.inpaint import repaint_timeline
from ddpm.editing import inpaint
from ddpm.model import DiffusionModel
from ddpm.serve.jobs import Job, Work
from ddpm.viz.grid import make_grid

MAX_FRAMES = 12  # intermediate frames streamed per job
PADDING = 1  # pixels between the images of a grid
MIN_GRID_PX = 160  # grids are scaled up (nearest) to at least this width for the page


def grid_png(images: Tensor, *, scale_up: bool = True) -> bytes:
    """(N, C, H, W) in [-1, 1] → PNG grid, ⌈√N⌉ per row, with the layout in its text chunks."""
    n, _, h, w = images.shape
    columns = math.ceil(math.sqrt(n))
    pixels = make_grid(images, nrow=columns, padding=PADDING)  # (H', W', C) uint8
    scale = max(1, math.ceil(MIN_GRID_PX / pixels.shape[1])) if scale_up else 1
    pixels = pixels.repeat(scale, axis=0).repeat(scale, axis=1)
    image = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
    info = PngImagePlugin.PngInfo()
    for key, value in (("count", n), ("columns", columns), ("tile", f"{h * scale}x{w * scale}"),
                       ("padding", PADDING * scale)):  # fmt: skip
        info.add_text(f"ddpm:{key}", str(value))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def split_grid(png: bytes) -> list[np.ndarray]:
    """The images of a :func:`grid_png` back, by its text chunks (for tests and scripts)."""
    with Image.open(io.BytesIO(png)) as image:
        text = dict(image.text)
        pixels = np.asarray(image)
    count, columns, padding = (int(text[f"ddpm:{k}"]) for k in ("count", "columns", "padding"))
    h, w = (int(v) for v in text["ddpm:tile"].split("x"))
    tiles = []
    for i in range(count):
        row, col = divmod(i, columns)
        top, left = padding + row * (h + padding), padding + col * (w + padding)
        tiles.append(pixels[top : top + h, left : left + w])
    return tiles


def data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


@dataclass
class Stepper:
    """Turns a sampler's per-step callback into progress and frame events of a job."""

    job: Job
    total: int  # steps (model calls) the job will make
    stride: int = 1
    percent: int = -1

    def __post_init__(self) -> None:
        self.stride = max(1, math.ceil(self.total / MAX_FRAMES))

    def __call__(self, i: int, t: int, x_t: Tensor, x0_pred: Tensor | None = None) -> None:
        self.job.check()
        step = i + 1
        percent = min(100, 100 * step // max(1, self.total))
        if percent != self.percent:
            self.percent = percent
            self.job.emit({"type": "progress", "step": min(step, self.total), "total": self.total})
        if step % self.stride == 0 and step < self.total:
            frame = {"type": "frame", "step": step, "total": self.total, "t": int(t),
                     "x_t": data_url(grid_png(x_t.float().cpu()))}  # fmt: skip
            if x0_pred is not None:
                frame["x0"] = data_url(grid_png(x0_pred.float().cpu()))
            self.job.emit(frame)


@dataclass(frozen=True)
class SampleRequest:
    """A checked sampling request (``ddpm.serve.app`` checks the values)."""

    n: int
    sampler: str
    steps: int
    seed: int
    label: int | None  # None: a conditional run cycles through its classes
    guidance: float
    control: Tensor | None = None  # a control run's control image (1, C, H, W) in [-1, 1]; None: dropped
    control_scale: float | None = None  # a ControlNet's strength; None: its default, 1 (as trained)


def sample_work(model: DiffusionModel, request: SampleRequest) -> Work:
    """The job body that draws ``request.n`` images in one batch (so every frame shows them all); with a
    control image, every image gets it (as ``ddpm sample --control`` given it ``n`` times), and a first
    ``control`` event shows it."""

    def work(job: Job) -> bytes:
        labels = model.default_labels(request.n) if request.label is None else request.label
        if request.guidance != 1 and labels is None:
            raise ValueError("guidance needs a class-conditional run; leave it at 1")
        control = {}
        if request.control is not None:
            job.emit({"type": "control", "image": data_url(grid_png(request.control))})
            control["control"] = request.control.repeat(request.n, 1, 1, 1)
        if request.control_scale is not None:
            control["control_scale"] = request.control_scale
        stepper = Stepper(job, request.steps)
        samples = model.sample(
            request.n, sampler=request.sampler, steps=request.steps, seed=request.seed, labels=labels,
            guidance=request.guidance, batch_size=request.n, callback=stepper, **control,
        )  # fmt: skip
        return grid_png(samples)

    return work


@dataclass(frozen=True)
class InpaintRequest:
    """A checked inpainting request: one image (1, C, H, W) in [-1, 1] and its (H, W) bool mask."""

    image: Tensor
    mask: Tensor
    n: int
    steps: int
    jump_length: int
    resamples: int
    seed: int
    label: int | None


def inpaint_work(model: DiffusionModel, request: InpaintRequest) -> Work:
    """The job body that fills the masked region ``request.n`` times (RePaint) and returns their grid."""

    def work(job: Job) -> bytes:
        timeline = repaint_timeline(request.steps, request.jump_length, request.resamples)
        calls = sum(after > before for before, after in itertools.pairwise(timeline))
        stepper = Stepper(job, calls)
        images = request.image.repeat(request.n, 1, 1, 1)
        filled = inpaint(
            model, images, request.mask, steps=request.steps, jump_length=request.jump_length,
            resamples=request.resamples, seed=request.seed, labels=request.label, batch_size=request.n,
            callback=lambda i, t, x: stepper(i, t, x),
        )  # fmt: skip
        return grid_png(filled)

    return work
