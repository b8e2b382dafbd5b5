"""Every command that reads a model reads a diffusers folder too, in both layouts diffusers writes; those
that need a run's training data or history say so in one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from ddpm.cli import main
from ddpm.interop.diffusers_model import from_diffusers
from ddpm.model import to_uint8

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning")


def run_cli(capsys, *argv: object) -> tuple[int, str]:
    status = main([str(a) for a in argv])
    return status, capsys.readouterr().err.strip()


@pytest.mark.parametrize("layout", ["flat", "pipeline"])
def test_ddpm_sample_draws_from_either_layout(diffusers_folders, layout, tmp_path, capsys):
    out = tmp_path / "x.npz"
    status, err = run_cli(capsys, "sample", diffusers_folders[layout], "--n", 2, "--sampler", "ddim",
                          "--steps", 3, "--out", out)  # fmt: skip
    assert status == 0, err
    expected = to_uint8(from_diffusers(diffusers_folders["flat"]).sample(2, sampler="ddim", steps=3))
    with np.load(out) as data:
        assert data["images"].shape == (2, 8, 8, 1) and np.array_equal(data["images"], expected)


def test_without_sampler_flags_a_folder_draws_with_ddim_50(diffusers_folders, tmp_path, capsys):
    out = tmp_path / "own.npz"
    status, err = run_cli(capsys, "sample", diffusers_folders["pipeline"], "--n", 2, "--out", out)
    assert status == 0, err
    model = from_diffusers(diffusers_folders["pipeline"])
    expected = to_uint8(model.sample(2, sampler="ddim", steps=50, spacing="uniform", eta=0.0))
    assert np.array_equal(np.load(out)["images"], expected)


def test_every_sampler_runs_from_the_command_line(diffusers_folders, tmp_path, capsys):
    for sampler in ("ddpm", "dpm++2m", "dpm++2m_sde", "euler", "heun", "euler_a"):
        out = tmp_path / f"{sampler}.png"
        status, err = run_cli(capsys, "sample", diffusers_folders["flat"], "--n", 2, "--sampler", sampler,
                              "--steps", 2, "--out", out)  # fmt: skip
        assert status == 0 and out.is_file(), (sampler, err)


def test_eval_scores_a_folder_against_the_given_data(diffusers_folders, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DDPM_DATA", str(tmp_path / "cache"))
    status, err = run_cli(capsys, "eval", diffusers_folders["flat"], "--data", "digits", "--n", 20,
                          "--metrics", "fd", "--sampler", "ddim", "--steps", 3,
                          "--json", tmp_path / "r.json")  # fmt: skip
    assert status == 0, err
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["data"] == "digits" and report["metrics"]["n"] == 20 and report["sampler"] == "ddim"


def test_eval_without_data_says_the_folder_records_none(diffusers_folders, capsys):
    status, err = run_cli(capsys, "eval", diffusers_folders["pipeline"])
    assert status == 2 and len(err.splitlines()) == 1
    assert err == ("ddpm eval: error: --data is required for a diffusers model folder, which records no "
                   "training data: give e.g. --data cifar10")  # fmt: skip


def test_invert_interpolate_and_inpaint_work_on_a_folder(diffusers_folders, user_files, tmp_path, capsys):
    folder = diffusers_folders["flat"]
    digits = [user_files["digit0"], user_files["digit1"]]
    status, err = run_cli(capsys, "invert", folder, *digits, "--steps", 3, "--out", tmp_path / "l.npz")
    assert status == 0, err
    assert np.load(tmp_path / "l.npz")["latents"].shape == (2, 1, 8, 8)
    status, err = run_cli(capsys, "interpolate", diffusers_folders["pipeline"], "--images", *digits,
                          "--num", 3, "--steps", 3, "--out", tmp_path / "i.npz")  # fmt: skip
    assert status == 0, err
    assert np.load(tmp_path / "i.npz")["images"].shape == (3, 8, 8, 1)
    status, err = run_cli(capsys, "inpaint", folder, digits[0], "--mask", "top", "--n", 2, "--steps", 4,
                          "--jump-length", 2, "--resamples", 2, "--out", tmp_path / "p.npz")  # fmt: skip
    assert status == 0, err
    with np.load(tmp_path / "p.npz") as data:
        assert data["images"].shape == (2, 8, 8, 1)
        original = np.asarray(Image.open(digits[0]))
        kept = ~data["mask"]  # the unmasked half is the original image
        assert np.abs(data["images"][0, ..., 0][kept].astype(int) - original[kept]).max() <= 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["report", "{folder}"], "is a diffusers model folder, not a run directory: a poster tells a"),
        (["viz", "forward", "{folder}"], "pictures of a run need its training data; a diffusers model"),
    ],
)
def test_commands_that_need_a_run_directory_say_so(diffusers_folders, argv, message, tmp_path, capsys):
    argv = [a.replace("{folder}", str(diffusers_folders["pipeline"])) for a in argv]
    status, err = run_cli(capsys, *argv, *(["--out", tmp_path / "p.pdf"] if argv[0] == "report" else []))
    assert status == 2 and len(err.splitlines()) == 1 and message in err, err
