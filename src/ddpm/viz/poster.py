"""``ddpm report RUN_DIR --out poster.pdf``: a run as a poster laid out by the lecture's guidelines.

The guidelines live in :mod:`ddpm.viz.guidelines`; the layout is data (:mod:`ddpm.viz.layout`), so
the returned :class:`PosterLayout` says which guideline, if any, a poster breaks. Graphics are sized
to cover the middle of the guideline's graphics range; the body text size (never below the
guideline's minimum) is chosen so that text covers as close to the middle of its range as fits.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch
from torch import Tensor

from ddpm.eval.samples import load_samples_npz
from ddpm.rundir import RunDir
from ddpm.viz import guidelines as g
from ddpm.viz.curves import draw_loss, draw_metric, draw_quality_vs_steps, metric_names
from ddpm.viz.figures import FIGURE_FORMATS, new_figure
from ddpm.viz.guidelines import PageSpec, page_spec
from ddpm.viz.layout import (
    Box,
    GraphicBlock,
    PosterLayout,
    RowBlock,
    Section,
    TextBlock,
    column_bounds,
    layout_poster,
    with_pixels,
)
from ddpm.viz.poster_graphics import (
    Graphic,
    chart_graphic,
    lines_graphic,
    poster_rc,
    scatter_graphic,
    table_graphic,
    table_of_values,
)
from ddpm.viz.poster_pictures import ControlPanel, Pictures, images_or_points, poster_pictures
from ddpm.viz.poster_text import (
    ALGORITHM_1,
    ALGORITHM_2,
    PosterText,
    RunFacts,
    default_texts,
    default_title,
    format_value,
)
from ddpm.viz.process import (
    ImageTable,
    TrajectoryLike,
)
from ddpm.viz.run_files import RunInfo, load_run

QR_SIDE_LINES = 8  # QR code side in body-text lines (4″ on the poster, 8″ printed)
BODY_GROWTH = 1.25  # the body text may grow to this multiple of the page's body size to fill its share
REFERENCE = "Ho, Jain, Abbeel. Denoising diffusion probabilistic models. NeurIPS 2020."


@dataclass(frozen=True)
class _Request:
    """What the caller asked for beyond the run's own files."""

    final_dpi: float
    has_data: bool
    url: str | None
    quality_vs_steps: Mapping[str, Mapping[int, float]] | None
    quality_metric: str
    control: ControlPanel | None = None  # a ControlNet run's controls, samples and adherence


def _progress_chart(
    run: RunInfo, quality: Mapping[str, Mapping[int, float]] | None, metric: str, spec: PageSpec
) -> tuple[Graphic, str] | None:
    """Quality against sampler steps if measured, else the first evaluation metric over training."""
    if quality:
        graphic = chart_graphic("quality", lambda ax: draw_quality_vs_steps(ax, quality, metric), spec)
        return graphic, f"{metric} against the number of sampler steps."
    names = metric_names(run.evals)
    if not names:
        return None
    marker = spec.small_pt / 2

    def draw(ax: Axes) -> None:
        draw_metric(ax, run.evals, names[0], xlabel="training step", markersize=marker)

    return chart_graphic("quality", draw, spec), f"{names[0]} of samples during training."


@dataclass
class _Columns:
    """The three columns (problem & method → results → conclusion) at one page spec; each graphic is
    kept in ``graphics`` under its block's name."""

    spec: PageSpec
    run: RunInfo
    words: PosterText
    pictures: Pictures
    request: _Request
    graphics: dict[str, Graphic] = dataclasses.field(default_factory=dict)

    def add(self, graphic: Graphic) -> GraphicBlock:
        self.graphics[graphic.block.name] = graphic
        return graphic.block

    def picture(
        self, name: str, picture: ImageTable | list, titles: list[str], rows: list[str]
    ) -> GraphicBlock:
        """A bitmap graphic for images, scatter panels (one row, or rows) for points."""
        if isinstance(picture, ImageTable):
            return self.add(table_graphic(name, picture, self.spec, self.request.final_dpi))
        panels = picture if isinstance(picture[0], list) else [picture]
        noisy = name != "samples"  # strips reach the N(0, I) end of the chain; samples look like data
        return self.add(scatter_graphic(name, panels, titles, rows, self.spec, floor=3.5 if noisy else 0.0))

    def text(self, name: str, *paragraphs: str, framed: bool = False) -> TextBlock:
        return TextBlock(name, paragraphs, self.spec.body_pt, framed=framed)

    def heading(self, name: str, label: str) -> TextBlock:
        return TextBlock(name, (label,), self.spec.heading_pt, bold=True)

    def method(self) -> list[Section]:
        spec, words, pictures = self.spec, self.words, self.pictures
        left_edge, right_edge = column_bounds(spec)[0]
        algorithms = []
        for title, lines in (ALGORITHM_1, ALGORITHM_2):
            algorithms += [(title, spec.body_pt, True)] + [(s, spec.equation_pt, False) for s in lines]
        source = "data" if self.request.has_data else "samples"
        caption = f"Forward process: {source} x₀ dissolve into Gaussian noise as t grows."
        return [
            [self.heading("h_problem", "Problem"), self.text("problem", words.problem)],
            [
                self.heading("h_method", "Method"),
                self.text("method", words.method),
                self.picture("forward", pictures.forward, pictures.forward_titles, []),
                self.text("forward_caption", caption),
            ],
            [self.add(lines_graphic("algorithms", algorithms, spec, right_edge - left_edge))],
        ]

    def results(self, variant: int) -> list[Section]:
        """The middle column, with sample grid number ``variant``."""
        pictures, log, heading = self.pictures, self.run.log, self.heading("h_results", "Results")
        samples = self.picture("samples", pictures.samples[variant], pictures.sample_titles, [])
        column = [[heading, samples, self.text("samples_caption", self.words.samples_caption)]]
        control = self.request.control
        if (
            control is not None
        ):  # a ControlNet run's story is its controls: they take the reverse strip's place
            picture = self.add(control.picture(self.spec, self.request.final_dpi))
            column.append([picture, self.text("control_caption", control.caption())])
        elif pictures.reverse is not None:
            reverse = self.picture("reverse", pictures.reverse, pictures.reverse_titles, ["xₜ", "x̂₀"])
            caption = "Reverse process: xₜ (top) and the predicted x̂₀ (bottom) of one sample."
            column.append([reverse, self.text("reverse_caption", caption)])
        if any("loss" in r for r in log):
            loss = self.add(chart_graphic("loss", lambda ax: draw_loss(ax, log), self.spec))
            caption = "Training loss per logged step (pale) and smoothed."
            column.append([loss, self.text("loss_caption", caption)])
        return column

    def conclusion(self, metrics: Mapping[str, float]) -> list[Section]:
        spec, request, words, qr = self.spec, self.request, self.words, self.pictures.qr
        column = [
            [self.heading("h_conclusion", "Conclusion"), self.text("conclusion", words.conclusion)],
            [self.text("summary", *words.summary, framed=True)],
        ]
        progress = _progress_chart(self.run, request.quality_vs_steps, request.quality_metric, spec)
        if progress:
            column.append([self.add(progress[0]), self.text("quality_caption", progress[1])])
        row = [(k, format_value(v)) for k, v in metrics.items()]
        row += request.control.rows() if request.control is not None else []
        side_by_side = [self.add(table_of_values("metrics", row, spec))] if row else []
        if qr is not None:
            side = QR_SIDE_LINES * spec.body_pt * 1.3 / 72
            side_by_side.append(self.add(table_graphic("qr", qr, spec, request.final_dpi, fixed=side)))
        last: list = [RowBlock(tuple(side_by_side))] if side_by_side else []
        if request.url:
            last.append(self.text("url", f"More: {request.url}"))
        return [*column, last, [self.text("references", REFERENCE)]]


def _miss(layout: PosterLayout) -> tuple[float, float]:
    """How far a layout's area shares fall outside the guideline ranges (summed), then how far its
    text share is from the middle of its range: smaller is better on both."""
    ranges = {"text": g.TEXT_FRACTION, "graphic": g.GRAPHICS_FRACTION, "empty": g.EMPTY_FRACTION}
    shares = layout.fractions()
    outside = sum(max(low - shares[k], 0.0, shares[k] - high) for k, (low, high) in ranges.items())
    return outside, abs(shares["text"] - sum(g.TEXT_FRACTION) / 2)


def _fit(
    base: PageSpec, build, variants: int, title: str, authors: str
) -> tuple[PosterLayout, dict[str, Graphic]]:
    """Lay out each content variant at body sizes from the page's up to ``BODY_GROWTH`` times it, in
    1 pt steps (at poster scale); keep the layout that best follows the area guidelines (:func:`_miss`)."""
    best, error = None, None
    for variant in range(variants):
        for k in range(int((BODY_GROWTH - 1) * g.BODY_MIN_PT) + 1):
            spec = dataclasses.replace(base, body_pt=base.body_pt * (1 + k / g.BODY_MIN_PT))
            columns, graphics = build(spec, variant)
            try:
                layout = layout_poster(spec, title, authors, columns)
            except ValueError as err:  # a column no longer fits: larger text will not either
                error = error or err
                break
            if best is None or _miss(layout) < best[0]:
                best = (_miss(layout), layout, graphics)
    if best is None:
        raise error
    return best[1], best[2]


def render_poster(
    run_dir: str | Path,
    *,
    samples: Tensor | None = None,
    data: Tensor | None = None,
    trajectory: Sequence[TrajectoryLike] | None = None,
    metrics: Mapping[str, float] | None = None,
    quality_vs_steps: Mapping[str, Mapping[int, float]] | None = None,
    quality_metric: str = "quality",
    title: str | None = None,
    authors: str = "",
    url: str | None = None,
    text: PosterText | None = None,
    page: str = "poster",
    final_dpi: float = g.GRAPHICS_MIN_DPI_FINAL,
    seed: int = 0,
    control: ControlPanel | None = None,
) -> tuple[Figure, PosterLayout]:
    """Lay out and draw a run's poster; see :func:`make_poster` for the arguments."""
    base, run = page_spec(page), load_run(run_dir)
    if final_dpi <= 0:
        raise ValueError(f"final_dpi={final_dpi} must be > 0")
    final_npz = RunDir(run.run_dir).final_samples_npz
    if samples is None and not final_npz.is_file():
        raise ValueError(f"no samples for the poster of {run.run_dir}: pass samples or write {final_npz}")
    samples = images_or_points(load_samples_npz(final_npz)[0] if samples is None else samples, "samples")
    data = images_or_points(data, "data") if data is not None else None
    if metrics is None:
        metrics = {k: v for k, v in (run.evals[-1] if run.evals else {}).items() if k != "step"}
    metrics = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    facts = RunFacts.of(run)
    words = default_texts(facts, metrics, text)
    pictures = poster_pictures(samples, data, trajectory, facts, url, seed)
    request = _Request(final_dpi, data is not None, url, quality_vs_steps, quality_metric, control)

    def build(spec: PageSpec, variant: int) -> tuple[list[list[Section]], dict[str, Graphic]]:
        columns = _Columns(spec, run, words, pictures, request)
        return [columns.method(), columns.results(variant), columns.conclusion(metrics)], columns.graphics

    title = title or default_title(facts)
    layout, graphics = _fit(base, build, len(pictures.samples), title, authors)
    spec = layout.page
    with matplotlib.rc_context(poster_rc(spec)):
        fig = new_figure(spec.width_in, spec.height_in)
        pixels = {}
        for box in layout.boxes:
            if box.kind == "text":
                _draw_text(fig, box)
            elif box.kind == "frame":
                _draw_frame(fig, box, spec)
            elif size := graphics[box.name].draw(fig, box):
                pixels[box.name] = size
    return fig, with_pixels(layout, pixels)


def _draw_text(fig: Figure, box: Box) -> None:
    for i, line in enumerate(box.lines):
        y = box.y + box.h - (i + 0.5) * box.line_height_in
        x = box.x + box.w / 2 if box.align == "center" else box.x
        weight = "bold" if box.bold else "normal"
        fig.text(x, y, line, fontsize=box.size_pt, fontweight=weight, ha=box.align, va="center",
                 transform=fig.dpi_scale_trans)  # fmt: skip


def _draw_frame(fig: Figure, box: Box, page: PageSpec) -> None:
    style = f"round,pad=0,rounding_size={0.4 * page.body_pt / 72}"
    frame = FancyBboxPatch((box.x, box.y), box.w, box.h, boxstyle=style, transform=fig.dpi_scale_trans,
                           facecolor="#eef3fb", edgecolor="#3465a4", linewidth=page.body_pt / 14)  # fmt: skip
    fig.add_artist(frame)


def make_poster(
    run_dir: str | Path,
    out: str | Path | Sequence[str | Path],
    *,
    png_dpi: float | None = None,
    **options,
) -> PosterLayout:
    """Draw a run's poster, save it as each of ``out`` (.pdf, .png or .svg) and return its layout.

    ``options`` (keyword-only, all optional) go to :func:`render_poster`:
    ``samples`` generated images (N, C, H, W) in [-1, 1] or points (N, 2), default samples/final.npz;
    ``data`` real x₀ for the forward strip (default: the samples); ``trajectory`` recorded sampler
    steps (anything with .t, .x_t, .x0_pred) for the reverse strip; ``metrics`` {name: value} for
    the table and summary (default: the last line of eval.jsonl); ``quality_vs_steps``
    {sampler: {steps: value}} named ``quality_metric``; ``title``, ``authors``; ``url`` for the QR
    code; ``text`` a :class:`PosterText` replacing generated texts; ``page`` "poster" (47″ × 23.5″),
    "a4" or "letter" (one-page landscape handouts); ``final_dpi`` the resolution of bitmaps at final
    (printed) size; ``seed`` for the forward strip's noise; ``control`` a ControlNet run's
    :class:`~ddpm.viz.poster_pictures.ControlPanel` (its picture goes under the samples in place of the
    reverse strip, its adherence table into the conclusion column).

    PDF and SVG embed bitmaps at ``final_dpi`` (at final size); PNG is rendered at ``png_dpi``
    (default 100 for the poster, 200 for handouts). Broken guidelines are reported as warnings.
    """
    paths = [Path(out)] if isinstance(out, (str, Path)) else [Path(p) for p in out]
    for path in paths:
        if path.suffix.lower().lstrip(".") not in FIGURE_FORMATS:
            raise ValueError(f"cannot write a poster as {path.name!r}; allowed suffixes: .pdf, .png, .svg")
    fig, layout = render_poster(run_dir, **options)
    spec = layout.page
    png_dpi = png_dpi or (100.0 if spec.print_scale > 1 else 200.0)
    print_dpi = options.get("final_dpi", g.GRAPHICS_MIN_DPI_FINAL) * spec.print_scale
    with matplotlib.rc_context(poster_rc(spec)):
        for path in paths:
            fmt = path.suffix.lower().lstrip(".")
            path.parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(path, format=fmt, dpi=png_dpi if fmt == "png" else print_dpi)
    for problem in layout.violations():
        warnings.warn(f"poster guideline: {problem}", stacklevel=2)
    return layout
