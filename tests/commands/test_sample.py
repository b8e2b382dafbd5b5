"""`ddpm sample`: the run's own sampler by default, flags that override it, class rows, files."""

from __future__ import annotations

import numpy as np
from PIL import Image

from ddpm.cli import main
from ddpm.commands.sample import sample_to_files
from ddpm.model import load, to_uint8
from ddpm.rundir import RunDir
from ddpm.train.config import config_from_dict


def run_cli(capsys, *argv: str) -> tuple[int, str]:
    status = main(list(argv))
    return status, capsys.readouterr().err.strip()


def test_without_sampler_flags_it_draws_what_the_runs_own_evaluation_sampler_draws(
    digits_run, tmp_path, capsys
):
    out = tmp_path / "a.npz"
    status, err = run_cli(capsys, "sample", str(digits_run), "--n", "8", "--out", str(out), "--device", "cpu")
    assert status == 0, err
    options = config_from_dict(RunDir(digits_run).config_dict()).run.preview_options()
    assert options["sampler"] == "dpm++2m_sde" and options["eps_scale"] == 1.06  # not the library's default
    expected = to_uint8(load(digits_run).sample(8, **options))
    with np.load(out) as data:
        assert np.array_equal(data["images"], expected)


def test_sampler_flags_override_the_runs_own(digits_run, tmp_path, capsys):
    drawn = {}
    for name, flags in {"own": [], "ddim": ["--sampler", "ddim", "--steps", "3"]}.items():
        out = tmp_path / f"{name}.npz"
        status, err = run_cli(capsys, "sample", str(digits_run), "--n", "4", "--out", str(out), *flags)
        assert status == 0, err
        drawn[name] = np.load(out)["images"]
    expected = to_uint8(load(digits_run).sample(4, sampler="ddim", steps=3, eta=0.0, eps_scale=1.0))
    assert np.array_equal(drawn["ddim"], expected)
    assert not np.array_equal(drawn["ddim"], drawn["own"])


def test_a_grid_and_an_animation(digits_run, tmp_path):
    written = sample_to_files(digits_run, n=4, steps=3, out=tmp_path / "grid.png", gif=tmp_path / "r.gif")
    assert written == [tmp_path / "grid.png", tmp_path / "r.gif"]
    assert Image.open(written[0]).size[0] > 8 and Image.open(written[1]).n_frames > 1


def test_class_rows_write_labels_and_a_row_per_class(conditional_run, tmp_path):
    [npz] = sample_to_files(conditional_run, classes="1,4", guidance=2.0, n=3, sampler="ddim", steps=5,
                            eta=0.5, out=tmp_path / "s.npz", device="cpu")  # fmt: skip
    with np.load(npz) as data:
        assert data["images"].shape == (6, 8, 8, 1) and data["images"].dtype == np.uint8
        assert data["labels"].tolist() == [1, 1, 1, 4, 4, 4]
    [png] = sample_to_files(conditional_run, classes="all", n=2, steps=3, out=tmp_path / "grid.png")
    assert Image.open(png).size[1] > Image.open(png).size[0]  # ten rows of two


def test_class_rows_take_an_eps_scale(conditional_run, tmp_path, capsys):
    # Regression: `--class all --eps-scale 1.03` ended in a TypeError traceback (eps_scale reached a
    # sampler that does not take it on the editing path).
    out = tmp_path / "s.npz"
    status, err = run_cli(capsys, "sample", str(conditional_run), "--class", "all", "--eps-scale", "1.03",
                          "--n", "2", "--steps", "3", "--out", str(out))  # fmt: skip
    assert status == 0, err
    with np.load(out) as data:
        assert data["images"].shape == (20, 8, 8, 1) and data["labels"].tolist() == [
            k for k in range(10) for _ in "ab"
        ]
