"""The poster of a fake run, read back from the PDF it writes and from its layout."""

import math
import warnings

import numpy as np
import pypdf
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from PIL import Image

from ddpm.viz import guidelines as g
from ddpm.viz.poster import make_poster, render_poster
from ddpm.viz.poster_text import PosterText
from tests.viz.fakes import fake_images, fake_points, fake_trajectory, write_run

URL = "https://example.org/ddpm-digits"
LOW_DPI = 12  # bitmaps at 12 dpi (final size) keep the files small and the tests fast


def full_inputs():
    images = fake_images(64)
    trajectory = fake_trajectory(images, steps=10)
    return dict(
        samples=images, data=fake_images(8, seed=1), trajectory=trajectory, url=URL, authors="A. Student"
    )


@pytest.fixture(scope="module")
def poster(tmp_path_factory):
    """One full poster written as PDF, PNG and SVG at low bitmap resolution."""
    folder = tmp_path_factory.mktemp("poster")
    run = write_run(folder / "run")
    outs = [folder / "poster.pdf", folder / "poster.png", folder / "poster.svg"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # low dpi on purpose: the bitmap guideline is tested below
        layout = make_poster(run, outs, final_dpi=LOW_DPI, png_dpi=20, **full_inputs())
    return layout, outs


def pdf_text(path):
    """(text, font size in pt, x in pt) of every text object on the first page."""
    found = []

    def visit(text, cm, tm, font_dict, font_size):
        if text.strip():
            scale = math.hypot(tm[0], tm[1]) * math.hypot(cm[0], cm[1])
            found.append((text.strip(), font_size * scale, tm[4] * cm[0] + cm[4]))

    pypdf.PdfReader(path).pages[0].extract_text(visitor_text=visit)
    return found


def test_pdf_page_is_the_design_size(poster):
    _, (pdf, _, _) = poster
    box = pypdf.PdfReader(pdf).pages[0].mediabox
    assert (float(box.width), float(box.height)) == (47 * 72, 23.5 * 72) == (3384, 1692)


def test_no_text_in_the_pdf_is_below_24_pt_and_body_text_is_at_least_28(poster):
    layout, (pdf, _, _) = poster
    sizes = [size for _, size, _ in pdf_text(pdf)]
    assert len(sizes) > 100 and min(sizes) >= g.TEXT_MIN_PT - 1e-6
    for name in ("problem", "method", "conclusion", "summary"):
        assert layout[name].size_pt >= g.BODY_MIN_PT
    assert layout["title"].size_pt > layout["authors"].size_pt > layout["problem"].size_pt


def test_pdf_reads_in_three_columns_left_to_right(poster):
    _, (pdf, _, _) = poster
    where = {text: x for text, _, x in pdf_text(pdf)}
    third = 3384 / 3
    assert where["Problem"] < third and where["Method"] < third
    assert third < where["Results"] < 2 * third
    assert where["Conclusion"] > 2 * third


def test_layout_follows_the_area_guidelines(poster):
    layout, _ = poster
    shares = layout.fractions()
    for kind, (low, high) in (("text", g.TEXT_FRACTION), ("graphic", g.GRAPHICS_FRACTION),
                              ("empty", g.EMPTY_FRACTION)):  # fmt: skip
        assert low <= shares[kind] <= high, (kind, shares[kind])
    roles = {b.name: b.column for b in layout.boxes}
    assert roles["forward"] == roles["algorithms"] == 0  # problem & method
    assert roles["samples"] == roles["reverse"] == roles["loss"] == 1  # results
    assert roles["summary"] == roles["qr"] == roles["metrics"] == 2  # conclusion
    assert layout["qr"].w == pytest.approx(layout["qr"].h)


def test_pdf_embeds_the_bitmaps_the_layout_records(poster):
    layout, (pdf, _, _) = poster
    embedded = sorted(image.image.size for image in pypdf.PdfReader(pdf).pages[0].images)
    recorded = sorted(b.pixels for b in layout.boxes if b.pixels)
    assert embedded == recorded and len(recorded) == 4  # forward, samples, reverse, QR code


def test_png_and_svg_have_the_page_size(poster):
    _, (_, png, svg) = poster
    pixels = np.asarray(Image.open(png).convert("L"))
    assert pixels.shape == (round(23.5 * 20), 47 * 20) and pixels.var() > 0
    assert 'width="3384pt" height="1692pt"' in svg.read_text()[:2000]


def test_default_resolution_meets_every_guideline(run_dir):
    """At the default final dpi nothing is broken; rendering alone is fast (files are not written)."""
    fig, layout = render_poster(run_dir, **full_inputs())
    assert layout.violations() == []
    for box in (b for b in layout.boxes if b.pixels):
        assert box.pixels[0] / (box.w * g.PRINT_SCALE) >= g.GRAPHICS_MIN_DPI_FINAL
    # Every drawn text, tick labels included, keeps the margin at final size.
    fig.set_dpi(10)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()  # places axis labels
    renderer = canvas.get_renderer()
    margin_px = g.MIN_MARGIN_FINAL_IN / g.PRINT_SCALE * fig.dpi
    width_px, height_px = fig.get_size_inches() * fig.dpi
    drawn = [(t.get_text(), t.get_window_extent(renderer)) for t in fig.texts]
    drawn += [(ax.get_label() or "axes", ax.get_tightbbox(renderer)) for ax in fig.axes]  # labels, ticks
    for what, box in drawn:
        assert box.x0 >= margin_px and box.y0 >= margin_px, what
        assert box.x1 <= width_px - margin_px and box.y1 <= height_px - margin_px, what


def test_poster_of_a_points_run(run_dir):
    points = fake_points(800)
    _, layout = render_poster(run_dir, samples=points, data=fake_points(800, seed=1),
                              trajectory=fake_trajectory(points), url=URL)  # fmt: skip
    assert layout.violations() == []
    assert [b.name for b in layout.boxes if b.pixels] == ["qr"]  # scatter plots are vector graphics


def test_handout_variant_is_one_a4_page(run_dir, tmp_path):
    path = tmp_path / "handout.pdf"
    make_poster(run_dir, path, page="a4", final_dpi=LOW_DPI, **full_inputs())
    box = pypdf.PdfReader(path).pages[0].mediabox
    assert (float(box.width), float(box.height)) == pytest.approx((841.89, 595.28), abs=0.01)
    assert len(pypdf.PdfReader(path).pages) == 1


def test_samples_come_from_final_npz_and_texts_can_be_replaced(run_dir):
    images = (np.random.default_rng(0).random((30, 8, 8, 1)) * 255).astype(np.uint8)
    (run_dir / "samples").mkdir()
    np.savez(run_dir / "samples" / "final.npz", images=images)
    text = PosterText(problem="Our own problem statement.", summary=("• one result",))
    _, layout = render_poster(run_dir, text=text, final_dpi=LOW_DPI)
    assert layout["problem"].lines == ("Our own problem statement.",)
    assert layout["summary"].lines == ("• one result",)
    assert "reverse" not in {b.name for b in layout.boxes}  # no trajectory given


def test_broken_guidelines_are_warned_about(run_dir, tmp_path):
    with pytest.warns(UserWarning, match="poster guideline: samples bitmap is below 150 dpi at final size"):
        make_poster(run_dir, tmp_path / "p.png", png_dpi=5, final_dpi=LOW_DPI, **full_inputs())


def test_text_that_cannot_fit_is_refused(run_dir):
    wordy = PosterText(conclusion="Many words about the results. " * 60)
    with pytest.raises(ValueError, match=r"poster column 3 \(conclusion\) does not fit the page"):
        render_poster(run_dir, text=wordy, final_dpi=LOW_DPI, **full_inputs())


def test_bad_poster_requests_are_refused(run_dir, tmp_path):
    with pytest.raises(ValueError, match=r"cannot write a poster as 'poster\.docx'; allowed suffixes"):
        make_poster(run_dir, tmp_path / "poster.docx", samples=fake_images(4))
    with pytest.raises(ValueError, match="no samples for the poster"):
        render_poster(run_dir)
    with pytest.raises(ValueError, match="unknown page 'a3'"):
        render_poster(run_dir, samples=fake_images(4), page="a3")
    with pytest.raises(ValueError, match="final_dpi=0 must be > 0"):
        render_poster(run_dir, samples=fake_images(4), final_dpi=0)
    with pytest.raises(ValueError, match=r"run directory .* does not exist"):
        render_poster(tmp_path / "nowhere", samples=fake_images(4))
    with pytest.raises(ValueError, match="url='  ' is empty"):
        render_poster(run_dir, samples=fake_images(4), url="  ")


def fake_control_panel(levels=True):
    from ddpm.viz.poster_pictures import ControlPanel

    images = fake_images(8, seed=2)
    measured = {"controlled": 0.61, "chance": 0.2, "ceiling": 1.0} if levels else None
    return ControlPanel("canny", images[:, :1], images, fake_images(8, seed=3), "edge F1", measured, 64)


def test_a_control_run_poster_shows_controls_samples_real_and_the_adherence(run_dir):
    panel = fake_control_panel()
    _, layout = render_poster(run_dir, control=panel, **full_inputs())
    assert layout.violations() == []
    names = [b.name for b in layout.boxes]
    assert names.index("samples") < names.index("control") and "reverse" not in names  # in its place
    assert "64 measured" in " ".join(layout["control_caption"].lines)
    assert panel.rows() == [("edge F1, controlled", "0.61"), ("edge F1, chance (base)", "0.2"),
                            ("edge F1, ceiling (real)", "1"), ("held-out controls", "64")]  # fmt: skip
    _, plain = render_poster(run_dir, **full_inputs())
    assert layout["metrics"].h > plain["metrics"].h  # the adherence rows joined the table of values
    panel = fake_control_panel(levels=False)
    _, layout = render_poster(run_dir, control=panel, **full_inputs())
    assert "no adherence measure" in " ".join(layout["control_caption"].lines) and panel.rows() == []
