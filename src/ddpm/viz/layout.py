"""Poster layout as data: text and graphic boxes in a title band and three columns.

Keeping the layout as a list of boxes makes the guidelines checkable: area fractions, margins,
column widths, font sizes and bitmap resolution are computed from it (:meth:`PosterLayout.violations`).
Boxes are in inches at design size, origin at the lower-left corner of the page (as matplotlib).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Literal

from matplotlib.backends.backend_agg import RendererAgg
from matplotlib.font_manager import FontProperties

from ddpm.viz import guidelines as g
from ddpm.viz.guidelines import PageSpec

LINE_SPACING = 1.3  # line height / font size
BULLET = "• "
Kind = Literal["text", "graphic", "frame"]


@dataclass(frozen=True)
class Box:
    """A rectangle of the poster; ``frame`` boxes are decorations around text and count as empty."""

    name: str
    kind: Kind
    x: float
    y: float
    w: float
    h: float
    column: int | None = None  # 0, 1, 2 (left → right); None for the title band
    lines: tuple[str, ...] = ()  # wrapped lines of a text box
    size_pt: float = 0.0  # font size of a text box
    bold: bool = False
    align: Literal["left", "center"] = "left"
    pixels: tuple[int, int] | None = None  # (width, height) of the bitmap a graphic embeds, if any

    @property
    def area(self) -> float:
        return self.w * self.h

    @property
    def line_height_in(self) -> float:
        return self.size_pt * LINE_SPACING / 72


@dataclass(frozen=True)
class TextBlock:
    """Paragraphs to wrap to the column; a paragraph starting with "• " is a bullet."""

    name: str
    paragraphs: tuple[str, ...]
    size_pt: float
    bold: bool = False
    framed: bool = False  # drawn inside a tinted frame (the summary box)


@dataclass(frozen=True)
class GraphicBlock:
    """A picture whose height follows from its width; fixed-width ones do not scale with the column."""

    name: str
    height_for_width: Callable[[float], float]
    fixed_width_in: float | None = None


@dataclass(frozen=True)
class RowBlock:
    """Graphics side by side (e.g. a table beside the QR code), top-aligned and centered as a group."""

    blocks: tuple[GraphicBlock, ...]


Block = TextBlock | GraphicBlock | RowBlock
Section = Sequence[Block]  # a heading and what belongs to it: kept together, spaced from the next


@cache
def _renderer() -> RendererAgg:
    return RendererAgg(8, 8, 72)  # 72 dpi: widths come out in points


MEASURE_PT = 100.0  # text is measured at this size and scaled: widths are linear in the size


@cache
def _width_at_measure_size(text: str, bold: bool, math: bool) -> float:
    font = FontProperties(family=g.FONT_FAMILY, size=MEASURE_PT, weight="bold" if bold else "normal")
    return _renderer().get_text_width_height_descent(text, font, ismath=math)[0]


def text_width_pt(text: str, size_pt: float, bold: bool = False, math: bool = False) -> float:
    """Rendered width of one line of sans-serif text (or mathtext with ``math``) in points."""
    return _width_at_measure_size(text, bold, math) * size_pt / MEASURE_PT


def line_width_pt(words: Sequence[str], size_pt: float, bold: bool = False) -> float:
    """Width of words joined by spaces, from cached per-word widths (kerning across words ignored)."""
    space = text_width_pt("a a", size_pt, bold) - 2 * text_width_pt("a", size_pt, bold)
    return sum(text_width_pt(w, size_pt, bold) for w in words) + space * max(len(words) - 1, 0)


@cache
def _height_at_measure_size(text: str, math: bool) -> float:
    font = FontProperties(family=g.FONT_FAMILY, size=MEASURE_PT)
    return _renderer().get_text_width_height_descent(text, font, ismath=math)[1]


def text_height_pt(text: str, size_pt: float, math: bool = False) -> float:
    """Rendered height (ascent + descent) of one line of text or mathtext in points."""
    return _height_at_measure_size(text, math) * size_pt / MEASURE_PT


def wrap(paragraph: str, width_in: float, size_pt: float, bold: bool = False) -> list[str]:
    """Greedy word wrap at the measured width; bullet paragraphs get a hanging indent."""
    indent = ["\u2003"] if paragraph.startswith(BULLET) else []  # an em space, about the bullet's width
    lines: list[list[str]] = []
    line: list[str] = []
    for word in paragraph.split():
        if line and line_width_pt([*line, word], size_pt, bold) > width_in * 72:
            lines.append(line)
            line = [*indent, word]
        else:
            line.append(word)
    return [" ".join(words) for words in (*lines, line) if words]


@dataclass(frozen=True)
class PosterLayout:
    """Every box of a poster page, with the columns they were stacked in."""

    page: PageSpec
    boxes: tuple[Box, ...]
    columns: tuple[tuple[float, float], ...]  # (left, right) of each column, inches

    def __getitem__(self, name: str) -> Box:
        for box in self.boxes:
            if box.name == name:
                return box
        raise KeyError(name)

    def area(self, kind: Kind) -> float:
        return sum(b.area for b in self.boxes if b.kind == kind)

    def fractions(self) -> dict[str, float]:
        """Shares of the page area covered by text, by graphics, and by neither."""
        page = self.page.width_in * self.page.height_in
        text, graphic = self.area("text") / page, self.area("graphic") / page
        return {"text": text, "graphic": graphic, "empty": 1.0 - text - graphic}

    def violations(self) -> list[str]:
        """The guidelines this layout breaks, one line each (empty when it follows them all)."""
        page, found = self.page, []
        min_margin = g.MIN_MARGIN_FINAL_IN / page.print_scale
        for b in self.boxes:
            edge = min(b.x, b.y, page.width_in - b.x - b.w, page.height_in - b.y - b.h)
            if edge < min_margin - 1e-9:
                found.append(f"{b.name} is {edge:.2f}″ from the page edge; the margin is {min_margin:.2f}″")
            if b.pixels and b.pixels[0] / (b.w * page.print_scale) < g.GRAPHICS_MIN_DPI_FINAL:
                found.append(f"{b.name} bitmap is below {g.GRAPHICS_MIN_DPI_FINAL:g} dpi at final size")
        if page.name != g.POSTER.name:
            return found  # handouts: the area, type and board-width guidelines are for the printed poster
        ranges = {"text": g.TEXT_FRACTION, "graphic": g.GRAPHICS_FRACTION, "empty": g.EMPTY_FRACTION}
        for kind, share in self.fractions().items():
            low, high = ranges[kind]
            if not low <= share <= high:
                found.append(f"{kind} covers {share:.1%} of the page; the guideline is {low:.0%}–{high:.0%}")
        for b in self.boxes:
            if b.kind == "text" and b.size_pt < g.TEXT_MIN_PT:
                found.append(f"{b.name} text is {b.size_pt:g} pt; nothing may be below {g.TEXT_MIN_PT:g} pt")
        for left, right in self.columns:
            width = (right - left) * page.print_scale
            if abs(width - g.A0_WIDTH_IN) > g.COLUMN_WIDTH_TOLERANCE * g.A0_WIDTH_IN:
                found.append(f"a column is {width:.1f}″ wide at final size, not about one A0 board")
        return found


def column_bounds(page: PageSpec, count: int = len(g.COLUMN_ROLES)) -> tuple[tuple[float, float], ...]:
    """(left, right) of equal columns between the margins, separated by the gutter."""
    width = (page.width_in - 2 * page.margin_in - (count - 1) * page.gutter_in) / count
    lefts = [page.margin_in + i * (width + page.gutter_in) for i in range(count)]
    return tuple((left, left + width) for left in lefts)


class _Column:
    """Stacks sections top-down in one column for a given graphics scale."""

    def __init__(self, index: int, bounds: tuple[float, float], sections: Sequence[Section], page: PageSpec):
        self.index, self.page, self.sections = index, page, [list(s) for s in sections if s]
        self.left, self.width = bounds[0], bounds[1] - bounds[0]
        body_line = page.body_pt * LINE_SPACING / 72
        self.gap_in, self.gap_between, self.gap_row = 0.25 * body_line, 0.7 * body_line, 2 * body_line
        self.pad = 0.6 * body_line  # inside a framed text block
        self.wrapped = {}
        for block in (b for s in self.sections for b in s if isinstance(b, TextBlock)):
            width = self.width - (2 * self.pad if block.framed else 0)
            self.wrapped[block.name] = [
                line for p in block.paragraphs for line in wrap(p, width, block.size_pt, block.bold)
            ]

    def graphic_width(self, block: GraphicBlock, scale: float, share: int = 1) -> float:
        """Fixed width if the graphic has one, else ``scale`` of its share of the column."""
        room = (self.width - (share - 1) * self.gap_row) / share
        return min(block.fixed_width_in, room) if block.fixed_width_in else scale * room

    def height(self, block: Block, scale: float) -> float:
        if isinstance(block, RowBlock):
            n = len(block.blocks)
            return max(b.height_for_width(self.graphic_width(b, scale, n)) for b in block.blocks)
        if isinstance(block, GraphicBlock):
            return block.height_for_width(self.graphic_width(block, scale))
        lines = len(self.wrapped[block.name]) * block.size_pt * LINE_SPACING / 72
        return lines + (2 * self.pad if block.framed else 0)

    def total_height(self, scale: float) -> float:
        blocks = sum(self.height(b, scale) for s in self.sections for b in s)
        gaps = sum(len(s) - 1 for s in self.sections) * self.gap_in
        return blocks + gaps + max(len(self.sections) - 1, 0) * self.gap_between

    def graphic_area(self, scale: float) -> float:
        area = 0.0
        for block in (b for s in self.sections for b in s):
            for b, n in self._graphics(block):
                w = self.graphic_width(b, scale, n)
                area += w * b.height_for_width(w)
        return area

    @staticmethod
    def _graphics(block: Block) -> list[tuple[GraphicBlock, int]]:
        """The graphics in ``block`` with how many share its row."""
        if isinstance(block, RowBlock):
            return [(b, len(block.blocks)) for b in block.blocks]
        return [(block, 1)] if isinstance(block, GraphicBlock) else []

    def fit_scale(self, available: float) -> float:
        """The largest graphics scale in (0, 1] at which the column fits in ``available`` inches."""
        if self.total_height(1.0) <= available:
            return 1.0
        low, high = 0.0, 1.0
        if self.total_height(0.05) > available:
            role = g.COLUMN_ROLES[self.index] if self.index < len(g.COLUMN_ROLES) else str(self.index)
            raise ValueError(
                f"poster column {self.index + 1} ({role}) does not fit the page; shorten its text"
            )
        for _ in range(40):
            mid = (low + high) / 2
            low, high = (mid, high) if self.total_height(mid) <= available else (low, mid)
        return low

    def place(self, scale: float, top: float, available: float) -> list[Box]:
        """Boxes for this column; spare height goes between sections so the column ends at the bottom."""
        spare = max(available - self.total_height(scale), 0.0)
        between = self.gap_between + (spare / (len(self.sections) - 1) if len(self.sections) > 1 else 0.0)
        boxes, y = [], top
        for k, section in enumerate(self.sections):
            if k:
                y -= between
            for i, block in enumerate(section):
                if i:
                    y -= self.gap_in
                h = self.height(block, scale)
                y -= h
                boxes.extend(self._boxes(block, scale, y, h))
        return boxes

    def _boxes(self, block: Block, scale: float, y: float, h: float) -> list[Box]:
        if isinstance(block, RowBlock):
            n = len(block.blocks)
            widths = [self.graphic_width(b, scale, n) for b in block.blocks]
            x = self.left + (self.width - sum(widths) - (n - 1) * self.gap_row) / 2
            boxes = []
            for b, w in zip(block.blocks, widths, strict=True):
                bh = b.height_for_width(w)
                boxes.append(Box(b.name, "graphic", x, y + h - bh, w, bh, self.index))
                x += w + self.gap_row
            return boxes
        if isinstance(block, GraphicBlock):
            w = self.graphic_width(block, scale)
            return [Box(block.name, "graphic", self.left + (self.width - w) / 2, y, w, h, self.index)]
        lines = tuple(self.wrapped[block.name])
        pad = self.pad if block.framed else 0.0
        widths = (line_width_pt(line.split(" "), block.size_pt, block.bold) for line in lines)
        text_w = max(widths, default=0.0) / 72
        text = Box(
            block.name, "text", self.left + pad, y + pad, text_w, h - 2 * pad, self.index,
            lines, block.size_pt, block.bold,
        )  # fmt: skip
        if not block.framed:
            return [text]
        return [Box(f"{block.name}_frame", "frame", self.left, y, self.width, h, self.index), text]


def title_boxes(page: PageSpec, title: str, authors: str) -> list[Box]:
    """Centered title (bold) and authors lines at the top of the page, inside the margins."""
    boxes, top, width = [], page.height_in - page.margin_in, page.width_in - 2 * page.margin_in
    for name, text, size, bold in (
        ("title", title, page.title_pt, True),
        ("authors", authors, page.authors_pt, False),
    ):
        if not text:
            continue
        lines = tuple(wrap(text, width, size, bold))
        w = max(line_width_pt(line.split(" "), size, bold) for line in lines) / 72
        h = len(lines) * size * LINE_SPACING / 72
        top -= h
        boxes.append(Box(name, "text", (page.width_in - w) / 2, top, w, h, None, lines, size, bold, "center"))
    return boxes


def layout_poster(
    page: PageSpec,
    title: str,
    authors: str,
    columns: Sequence[Sequence[Section]],
    graphics_target: float = sum(g.GRAPHICS_FRACTION) / 2,
) -> PosterLayout:
    """Stack each column's sections under the title band, sizing scalable graphics so that together
    they cover ``graphics_target`` of the page (as close as the columns' heights allow)."""
    if len(columns) != len(g.COLUMN_ROLES):
        raise ValueError(
            f"a poster has {len(g.COLUMN_ROLES)} columns ({', '.join(g.COLUMN_ROLES)}), got {len(columns)}"
        )
    band = title_boxes(page, title, authors)
    body_line = page.body_pt * LINE_SPACING / 72
    top = (min(b.y for b in band) if band else page.height_in - page.margin_in) - body_line
    available = top - page.margin_in
    bounds = column_bounds(page)
    stacks = [_Column(i, bounds[i], sections, page) for i, sections in enumerate(columns)]
    caps = [c.fit_scale(available) for c in stacks]

    def graphic_share(scale: float) -> float:
        area = sum(c.graphic_area(min(scale, cap)) for c, cap in zip(stacks, caps, strict=True))
        return area / (page.width_in * page.height_in)

    low, high = 0.0, 1.0
    for _ in range(40):  # graphic_share grows with scale: bisect for the target
        mid = (low + high) / 2
        low, high = (mid, high) if graphic_share(mid) <= graphics_target else (low, mid)
    scale = high if graphic_share(1.0) > graphics_target else 1.0
    boxes = list(band)
    for column, cap in zip(stacks, caps, strict=True):
        boxes += column.place(min(scale, cap), top, available)
    return PosterLayout(page, tuple(boxes), bounds)


def with_pixels(layout: PosterLayout, pixels: dict[str, tuple[int, int]]) -> PosterLayout:
    """The same layout with the bitmap sizes the renderer embedded recorded on their boxes."""
    boxes = tuple(dataclasses.replace(b, pixels=pixels.get(b.name, b.pixels)) for b in layout.boxes)
    return dataclasses.replace(layout, boxes=boxes)
