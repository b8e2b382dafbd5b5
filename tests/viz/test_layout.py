import itertools

import pytest

from ddpm.viz import guidelines as g
from ddpm.viz.guidelines import POSTER, page_spec
from ddpm.viz.layout import (
    Box,
    GraphicBlock,
    PosterLayout,
    RowBlock,
    TextBlock,
    column_bounds,
    layout_poster,
    line_width_pt,
    wrap,
)

WORDS = "Diffusion models learn to undo a fixed process that turns data into noise. " * 6


def test_guideline_constants_agree_with_the_poster_page():
    assert (POSTER.width_in, POSTER.height_in) == (47.0, 23.5)
    assert POSTER.width_in * POSTER.print_scale == 94.0 and POSTER.height_in * POSTER.print_scale == 47.0
    assert POSTER.margin_in * POSTER.print_scale >= g.MIN_MARGIN_FINAL_IN
    assert POSTER.body_pt >= g.BODY_MIN_PT and POSTER.small_pt >= g.TEXT_MIN_PT
    assert POSTER.equation_pt * g.MATHTEXT_SCRIPT_SHRINK >= g.TEXT_MIN_PT  # sub/superscripts too
    for low, high in (g.TEXT_FRACTION, g.GRAPHICS_FRACTION, g.EMPTY_FRACTION):
        assert 0 < low < high < 1


def test_columns_are_about_one_a0_board_wide_at_final_size():
    bounds = column_bounds(POSTER)
    assert len(bounds) == 3 and bounds[0][0] == POSTER.margin_in
    assert bounds[-1][1] == pytest.approx(POSTER.width_in - POSTER.margin_in)
    for left, right in bounds:
        assert abs((right - left) * POSTER.print_scale / g.A0_WIDTH_IN - 1) < g.COLUMN_WIDTH_TOLERANCE


def test_wrap_keeps_every_word_within_the_width():
    lines = wrap(WORDS, 10.0, 28)
    assert " ".join(lines).split() == WORDS.split()
    assert all(line_width_pt(line.split(" "), 28) <= 10.0 * 72 for line in lines)
    assert len(lines) > 3
    bullet = wrap("• " + WORDS, 10.0, 28)
    assert bullet[0].startswith("• ") and all(line.startswith("\u2003") for line in bullet[1:])


def _synthetic_columns(picture_aspect: float = 2.0, extra_picture: bool = False):
    def picture(name):
        return GraphicBlock(name, lambda w: w / picture_aspect)

    def text(name):
        return TextBlock(name, (WORDS[:200],), 28)

    heading = [TextBlock(f"h{i}", ("Heading",), 48, bold=True) for i in range(3)]
    return [
        [[heading[0], text("a")], [picture("p1"), text("c1")]],
        [[heading[1], picture("p2")], [picture("p3"), text("c3")]],
        [[heading[2], TextBlock("summary", ("• one", "• two"), 28, framed=True)],
         [RowBlock((GraphicBlock("table", lambda w: 2.0, 4.0), GraphicBlock("qr", lambda w: w, 4.0)))],
         [picture("p4")] if extra_picture else []],
    ]  # fmt: skip


def test_layout_boxes_stay_in_their_columns_inside_the_margins_without_overlap():
    layout = layout_poster(POSTER, "A title", "Some authors", _synthetic_columns())
    content = [b for b in layout.boxes if b.kind != "frame"]
    for b in content:
        assert b.x >= POSTER.margin_in - 1e-9 and b.y >= POSTER.margin_in - 1e-9
        assert b.x + b.w <= POSTER.width_in - POSTER.margin_in + 1e-9
        assert b.y + b.h <= POSTER.height_in - POSTER.margin_in + 1e-9
        if b.column is not None:
            left, right = layout.columns[b.column]
            assert left - 1e-9 <= b.x and b.x + b.w <= right + 1e-9
    for a, b in itertools.combinations(content, 2):
        assert (
            a.x + a.w <= b.x + 1e-9
            or b.x + b.w <= a.x + 1e-9
            or a.y + a.h <= b.y + 1e-9
            or b.y + b.h <= a.y + 1e-9
        )
    assert layout["table"].y + layout["table"].h == pytest.approx(layout["qr"].y + layout["qr"].h)  # a row
    assert layout["table"].x + layout["table"].w < layout["qr"].x


def test_layout_sizes_graphics_to_the_middle_of_the_guideline():
    layout = layout_poster(POSTER, "A title", "", _synthetic_columns(1.2, extra_picture=True))
    fractions = layout.fractions()
    assert fractions["graphic"] == pytest.approx(sum(g.GRAPHICS_FRACTION) / 2, abs=1e-3)
    assert sum(fractions.values()) == pytest.approx(1.0)
    expected_text = sum(b.w * b.h for b in layout.boxes if b.kind == "text") / (
        POSTER.width_in * POSTER.height_in
    )
    assert fractions["text"] == pytest.approx(expected_text)


def test_layout_refuses_text_that_cannot_fit():
    columns = _synthetic_columns()
    columns[0].append([TextBlock("long", (WORDS * 30,), 28)])
    with pytest.raises(ValueError, match=r"poster column 1 \(problem & method\) does not fit the page"):
        layout_poster(POSTER, "A title", "", columns)


def test_layout_needs_three_columns():
    with pytest.raises(ValueError, match="a poster has 3 columns"):
        layout_poster(POSTER, "A title", "", _synthetic_columns()[:2])


def test_violations_name_each_broken_guideline():
    small_text = Box("note", "text", 0.1, 5, 3, 1, 0, ("tiny",), 20.0)
    bitmap = Box("grid", "graphic", 5, 5, 10, 5, 1, pixels=(1000, 500))  # 50 dpi at 20″ final width
    problems = PosterLayout(POSTER, (small_text, bitmap), column_bounds(POSTER)).violations()
    assert any("note is 0.10″ from the page edge" in p for p in problems)
    assert any("note text is 20 pt; nothing may be below 24 pt" in p for p in problems)
    assert any("grid bitmap is below 150 dpi" in p for p in problems)
    assert any(p.startswith("graphic covers") for p in problems)


def test_unknown_page_is_refused():
    assert page_spec("a4").width_in == pytest.approx(297 / 25.4)
    with pytest.raises(ValueError, match="unknown page 'a3'; allowed: poster, a4, letter"):
        page_spec("a3")
