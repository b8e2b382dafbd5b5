"""`ddpm viz` of latent diffusion (issue 20): an autoencoder run's reconstructions beside held-out originals
and its latent channels; a latent run's decoded samples and process pictures with those two; and every
picture a run cannot have, or a path that is no run, refused in one line with nothing written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image

from ddpm.cli import main
from ddpm.commands.viz import LATENT_IMAGES, RECONSTRUCTION_COLUMNS, RECONSTRUCTION_PAIRS
from ddpm.train.run import train
from ddpm.viz import save_figure
from ddpm.viz.autoencoder import latent_channels_figure, reconstruction_pairs_figure
from ddpm.viz.grid import save_grid
from tests.test_latent import latent_config
from tests.train.test_autoencoder_run import tiny_autoencoder_config

QUIET = {"log": lambda *_: None}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An f=2 digits autoencoder (8×8 → 2×4×4) trained for 6 steps, a 6-step latent run on it, and that run
    exported as an LDMPipeline folder."""
    folder = tmp_path_factory.mktemp("viz-latent")
    train(tiny_autoencoder_config(6), folder / "ae", **QUIET)
    train(latent_config(folder / "ae"), folder / "latent", **QUIET)
    assert main(["export", str(folder / "latent"), str(folder / "ldm")]) == 0  # an LDMPipeline folder
    return {"ae": folder / "ae", "latent": folder / "latent", "ldm": folder / "ldm"}


def _same_size(png: Path, figure: Figure, tmp_path: Path) -> bool:
    """Whether ``png`` has the size of ``figure`` saved as the command saves its figures."""
    return Image.open(png).size == Image.open(save_figure(figure, tmp_path / "expected" / png.name)).size


def test_an_autoencoder_run_shows_its_reconstructions_latents_and_curves(runs, tmp_path, capsys):
    assert main(["viz", "all", str(runs["ae"]), "--out-dir", str(tmp_path)]) == 0, capsys.readouterr().err
    assert {p.name for p in tmp_path.iterdir() if p.is_file()} == {
        "curves.png",
        "reconstructions.png",
        "latents.png",
    }
    # the sizes of the figures of 3 pairs of rows of 8 digits, and of 4 digits beside 2 latent channels
    count = RECONSTRUCTION_PAIRS * RECONSTRUCTION_COLUMNS
    grid = reconstruction_pairs_figure(torch.zeros(count, 1, 8, 8), torch.zeros(count, 1, 8, 8))
    assert _same_size(tmp_path / "reconstructions.png", grid, tmp_path)
    heat_maps = latent_channels_figure(
        torch.zeros(LATENT_IMAGES, 1, 8, 8), torch.zeros(LATENT_IMAGES, 2, 4, 4)
    )
    assert _same_size(tmp_path / "latents.png", heat_maps, tmp_path)


def test_a_latent_run_shows_decoded_samples_and_its_autoencoder(runs, tmp_path, capsys):
    assert main(["viz", "all", str(runs["latent"]), "--out-dir", str(tmp_path)]) == 0, capsys.readouterr().err
    names = {p.name for p in tmp_path.iterdir()}
    assert {"forward.png", "reverse.png", "samples.png", "reconstructions.png", "latents.png"} <= names
    expected = save_grid(torch.zeros(16, 1, 8, 8), tmp_path / "expected.png")  # 16 decoded 8×8 digits
    assert Image.open(tmp_path / "samples.png").size == Image.open(expected).size
    assert main(["viz", "latents", str(runs["latent"]), "--out-dir", str(tmp_path / "one")]) == 0
    assert [p.name for p in (tmp_path / "one").iterdir()] == ["latents.png"]


@pytest.mark.parametrize(
    ("kind", "target", "message"),
    [
        ("forward", "ae", r"picture 'forward' is a diffusion model's; '.*ae' is an autoencoder run \(latent "
         r"diffusion's first stage\), whose pictures are: curves, reconstructions, latents, all"),
        ("schedule", "ae", r"picture 'schedule' is a diffusion model's"),
        ("reconstructions", "missing", r"'.*missing' is neither a run directory nor a checkpoint folder"),
        ("latents", "pixels", r"picture 'latents' needs an autoencoder run or a latent diffusion run; "
         r"'.*' is a diffusion run on pixels"),
        ("reconstructions", "ldm", r"picture 'reconstructions' needs the run's data; a diffusers model "
         r"folder records none"),
    ],
)  # fmt: skip
def test_a_picture_the_run_cannot_have_is_refused_in_one_line(
    runs, digits_run, tmp_path, capsys, kind, target, message
):
    path = {**runs, "missing": tmp_path / "missing", "pixels": digits_run}[target]
    assert main(["viz", kind, str(path), "--out-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert re.search(message, err), err
    assert not (tmp_path / "out").exists()
