"""The lecture's poster guidelines, stated once. The poster layout and its tests read them from here.

Sizes are at design size (the PDF page) unless a name ends in ``_FINAL``; the print is scaled by
``PRINT_SCALE``.
"""

from __future__ import annotations

from dataclasses import dataclass

DESIGN_WIDTH_IN = 47.0  # landscape, designed at 47″ × 23.5″ …
DESIGN_HEIGHT_IN = 23.5
PRINT_SCALE = 2.0  # … and printed at 200 %: 94″ × 47″ final
MIN_MARGIN_FINAL_IN = 0.5  # for pins and plotter edges, at final size
COLUMN_ROLES = ("problem & method", "results", "conclusion")  # read in three columns, left → right
A0_WIDTH_IN = 841 / 25.4  # each column about one A0 board (841 mm) wide at final size …
COLUMN_WIDTH_TOLERANCE = 0.15  # … "about": within 15 %
BODY_MIN_PT = 28.0  # body text at design size
TEXT_MIN_PT = 24.0  # nothing smaller, anywhere (48 pt at final size)
FONT_FAMILY = "sans-serif"
TEXT_FRACTION = (0.20, 0.25)  # of the page area: mostly pictures, some text, much empty space
GRAPHICS_FRACTION = (0.40, 0.45)
EMPTY_FRACTION = (0.30, 0.40)
GRAPHICS_MIN_DPI_FINAL = 150.0  # bitmaps at print resolution at final size
MATHTEXT_SCRIPT_SHRINK = 0.7  # matplotlib draws sub/superscripts at 70 %; equations are sized for it


@dataclass(frozen=True)
class PageSpec:
    """One page format: size, spacing and the font sizes every element uses (points)."""

    name: str
    width_in: float
    height_in: float
    print_scale: float  # final size / design size
    margin_in: float  # page edge → content, at design size
    gutter_in: float  # between columns
    title_pt: float
    authors_pt: float
    heading_pt: float
    body_pt: float  # paragraphs, captions, summary
    small_pt: float  # tick labels, legends, table cells, strip labels
    equation_pt: float  # so that first-level scripts stay ≥ small_pt


POSTER = PageSpec(
    name="poster",
    width_in=DESIGN_WIDTH_IN,
    height_in=DESIGN_HEIGHT_IN,
    print_scale=PRINT_SCALE,
    margin_in=0.5,  # 1″ at final size
    gutter_in=0.6,
    title_pt=88.0,
    authors_pt=48.0,
    heading_pt=48.0,
    body_pt=BODY_MIN_PT,
    small_pt=TEXT_MIN_PT,
    equation_pt=36.0,  # 36 · 0.7 = 25.2 pt scripts
)

# One-page handouts: the same layout on paper, in sizes for reading at arm's length.
_HANDOUT_FONTS = dict(
    title_pt=22.0, authors_pt=12.0, heading_pt=12.0, body_pt=8.5, small_pt=7.0, equation_pt=10.0
)
A4 = PageSpec(
    name="a4", width_in=297 / 25.4, height_in=210 / 25.4, print_scale=1.0, margin_in=0.5, gutter_in=0.25,
    **_HANDOUT_FONTS,
)  # fmt: skip
LETTER = PageSpec(
    name="letter", width_in=11.0, height_in=8.5, print_scale=1.0, margin_in=0.5, gutter_in=0.25,
    **_HANDOUT_FONTS,
)  # fmt: skip
PAGES = {page.name: page for page in (POSTER, A4, LETTER)}


def page_spec(name: str) -> PageSpec:
    """The :class:`PageSpec` called ``name``: poster, a4 or letter."""
    if name not in PAGES:
        raise ValueError(f"unknown page {name!r}; allowed: {', '.join(PAGES)}")
    return PAGES[name]
