"""Drawing primitives of the poster: each picture is a :class:`Graphic`, a layout block plus a function
that draws it into its box. Bitmaps are upscaled by nearest neighbour to the print resolution.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from torch import Tensor

from ddpm.viz import guidelines as g
from ddpm.viz.guidelines import PageSpec
from ddpm.viz.layout import LINE_SPACING, Box, GraphicBlock, text_height_pt, text_width_pt
from ddpm.viz.process import ImageTable, draw_image_table, draw_scatter, scatter_limit

MAX_POINTS = 1000  # points per scatter plot
CHART_ASPECT = 2.4  # width / height of curve panels
Draw = Callable[[Figure, Box], "tuple[int, int] | None"]  # returns the bitmap size it embedded, if any


@dataclass(frozen=True)
class Graphic:
    block: GraphicBlock
    draw: Draw


def poster_rc(page: PageSpec) -> dict:
    """Matplotlib settings that hold the page's fonts: sans-serif, nothing below ``small_pt``."""
    weight = page.body_pt / g.BODY_MIN_PT  # line widths grow with the type
    return {
        "font.family": g.FONT_FAMILY,
        "font.size": page.body_pt,
        "axes.labelsize": page.body_pt,
        "axes.titlesize": page.small_pt,
        "xtick.labelsize": page.small_pt,
        "ytick.labelsize": page.small_pt,
        "legend.fontsize": page.small_pt,
        "mathtext.fontset": "dejavusans",
        "lines.linewidth": 3.0 * weight,
        "axes.linewidth": 1.5 * weight,
        "xtick.major.width": 1.5 * weight,
        "ytick.major.width": 1.5 * weight,
        "xtick.major.size": 6 * weight,
        "ytick.major.size": 6 * weight,
        "pdf.fonttype": 42,  # TrueType: selectable text, and sizes a PDF reader can check
    }


def _inches(page: PageSpec) -> float:
    return page.small_pt * LINE_SPACING / 72


def _axes(
    fig: Figure,
    box: Box,
    page: PageSpec,
    left: float = 0.0,
    bottom: float = 0.0,
    right: float = 0.0,
    top: float = 0.0,
) -> Axes:
    """Axes filling ``box`` less the given bands (inches) kept for labels."""
    w, h = page.width_in, page.height_in
    rect = ((box.x + left) / w, (box.y + bottom) / h, (box.w - left - right) / w, (box.h - bottom - top) / h)
    return fig.add_axes(rect)


def _compact(labels: tuple[str, ...], spacing_pt: float, size_pt: float) -> tuple[str, ...]:
    """Shorten "t = 800" labels to "800" (keeping the first whole) when the full ones would touch."""
    if not labels or max(text_width_pt(s, size_pt) for s in labels) < 0.9 * spacing_pt:
        return labels
    return (labels[0], *(s.split("= ")[-1] for s in labels[1:]))


def table_graphic(
    name: str, table: ImageTable, page: PageSpec, final_dpi: float, fixed: float | None = None
) -> Graphic:
    """Images as one bitmap, upscaled by nearest neighbour to ``final_dpi`` at final size."""
    top = 1.4 * _inches(page) if table.col_labels else 0.0
    left = (
        max(text_width_pt(s, page.small_pt) for s in table.row_labels) / 72 + 0.5 * _inches(page)
        if table.row_labels
        else 0.0
    )
    h0, w0 = table.pixels.shape[:2]

    def draw(fig: Figure, box: Box) -> tuple[int, int]:
        big = table.upscaled(max(1, math.ceil(box.w * page.print_scale * final_dpi / w0)))
        spacing_pt = (box.w - left) * 72 / max(len(table.col_centers), 1)
        big = dataclasses.replace(big, col_labels=_compact(big.col_labels, spacing_pt, page.small_pt))
        draw_image_table(_axes(fig, box, page, left=left, top=top), big)
        return big.pixels.shape[1], big.pixels.shape[0]

    return Graphic(GraphicBlock(name, lambda w: top + (w - left) * h0 / w0, fixed), draw)


def scatter_graphic(
    name: str,
    rows: list[list[Tensor]],
    titles: list[str],
    row_labels: list[str],
    page: PageSpec,
    floor: float = 3.5,
) -> Graphic:
    """Square scatter panels in rows (vector graphics: sharp at any zoom); see :func:`scatter_limit`."""
    cols, gap = len(rows[0]), 0.3 * _inches(page)
    top = 1.4 * _inches(page) if any(titles) else 0.0
    left = 1.4 * _inches(page) if row_labels else 0.0
    lim = scatter_limit(*rows[-1], floor=floor)
    marker = (page.body_pt / 4) ** 2 / 4

    def panel(w: float) -> float:
        return (w - left - (cols - 1) * gap) / cols

    def draw(fig: Figure, box: Box) -> None:
        p = panel(box.w)
        shown = _compact(tuple(titles), (p + gap) * 72, page.small_pt)
        for r, row in enumerate(rows):
            for c, points in enumerate(row):
                y = box.y + box.h - top - (r + 1) * p - r * gap
                cell = Box(name, "graphic", box.x + left + c * (p + gap), y, p, p)
                ax = _axes(fig, cell, page)
                draw_scatter(ax, points[:MAX_POINTS], shown[c] if r == 0 else "", lim, marker)
                if c == 0 and row_labels:
                    ax.set_ylabel(row_labels[r], fontsize=page.small_pt)

    height = lambda w: top + len(rows) * panel(w) + (len(rows) - 1) * gap  # noqa: E731
    return Graphic(GraphicBlock(name, height), draw)


def chart_graphic(name: str, draw_axes: Callable[[Axes], None], page: PageSpec) -> Graphic:
    """A curve panel; bands around the axes hold tick labels and axis labels."""
    small, body = page.small_pt / 72, page.body_pt / 72
    bands = dict(
        left=3.4 * small + 1.7 * body, bottom=1.4 * small + 1.5 * body, right=1.2 * small, top=0.6 * small
    )

    def draw(fig: Figure, box: Box) -> None:
        draw_axes(_axes(fig, box, page, **bands))

    return Graphic(GraphicBlock(name, lambda w: w / CHART_ASPECT), draw)


def lines_graphic(
    name: str, lines: list[tuple[str, float, bool]], page: PageSpec, column_w: float
) -> Graphic:
    """Lines of text and mathtext drawn as one picture (the algorithms), shrunk only to fit the column."""
    widths = [text_width_pt(s, pt, bold, "$" in s) for s, pt, bold in lines]
    fit = min(1.0, 0.98 * column_w * 72 / max(widths))
    lines = [(s, pt * fit, bold) for s, pt, bold in lines]
    # A slot per line, tall enough for fractions; headings after the first get extra space above.
    slots = [
        max(pt * LINE_SPACING, 1.15 * text_height_pt(s, pt, "$" in s)) / 72
        + (0.5 * pt / 72 if bold and i else 0)
        for i, (s, pt, bold) in enumerate(lines)
    ]
    width = max(widths) * fit / 72

    def draw(fig: Figure, box: Box) -> None:
        y = box.y + box.h
        for (s, pt, bold), slot in zip(lines, slots, strict=True):
            y -= slot
            fig.text(
                box.x,
                y + slot / 2,
                s,
                fontsize=pt,
                fontweight="bold" if bold else "normal",
                va="center",
                transform=fig.dpi_scale_trans,
            )

    return Graphic(GraphicBlock(name, lambda w: sum(slots), width), draw)


def table_of_values(name: str, rows: list[tuple[str, str]], page: PageSpec) -> Graphic:
    """A two-column table (name, value) at body size with a rule under the header."""
    rows = [("metric", "value"), *rows]
    size, row_h = page.body_pt, page.body_pt * 1.45 / 72
    name_w = max(text_width_pt(a, size, i == 0) for i, (a, _) in enumerate(rows)) / 72
    value_w = max(text_width_pt(b, size, i == 0) for i, (_, b) in enumerate(rows)) / 72
    width = name_w + 1.5 * size / 72 + value_w

    def draw(fig: Figure, box: Box) -> None:
        top = box.y + box.h
        for i, (a, b) in enumerate(rows):
            y = top - (i + 0.5) * row_h
            weight = "bold" if i == 0 else "normal"
            fig.text(
                box.x, y, a, fontsize=size, fontweight=weight, va="center", transform=fig.dpi_scale_trans
            )
            fig.text(
                box.x + box.w,
                y,
                b,
                fontsize=size,
                fontweight=weight,
                va="center",
                ha="right",
                transform=fig.dpi_scale_trans,
            )
        rule = top - row_h
        fig.add_artist(
            Line2D(
                [box.x, box.x + box.w],
                [rule, rule],
                transform=fig.dpi_scale_trans,
                color="black",
                linewidth=page.body_pt / 20,
            )
        )

    return Graphic(GraphicBlock(name, lambda w: len(rows) * row_h, width), draw)
