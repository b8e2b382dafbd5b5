"""Latent diffusion runs (Rombach et al. 2022) end to end: a diffusion model trained on a tiny digits
autoencoder's latents samples, evaluates, reports, inverts, interpolates and inpaints through the CLI as
a pixel run does; and every bad autoencoder run or data set is refused in one line with nothing written."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ddpm.cli import main
from ddpm.model import load
from ddpm.rundir import RunDir
from ddpm.train.config_layers import build_train_config
from ddpm.train.run import train
from tests.train.test_autoencoder_run import tiny_autoencoder_config

TINY_LATENT = (
    "model.base_channels=16", "model.num_res_blocks=1", "run.batch_size=16", "run.log_every=1",
    "run.checkpoint_every=3", "run.sample_every=0", "run.preview_images=4", "run.preview_steps=4",
)  # fmt: skip
QUIET = {"log": lambda *_: None}


def latent_config(autoencoder: Path, steps: int = 6, *overrides: str):
    return build_train_config("digits", kind="latent", overrides=(*TINY_LATENT, *overrides),
                              flags={"run.steps": steps, "latent.autoencoder": str(autoencoder)})  # fmt: skip


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An f=2 digits autoencoder (2×4×4 latents), and an unconditional and a class-conditional latent run
    on it."""
    folder = tmp_path_factory.mktemp("latent")
    train(tiny_autoencoder_config(20), folder / "ae", **QUIET)
    train(latent_config(folder / "ae"), folder / "latent", **QUIET)
    train(latent_config(folder / "ae", 6, "data.class_conditional=true"), folder / "conditional", **QUIET)
    return {
        "folder": folder,
        "ae": folder / "ae",
        "latent": folder / "latent",
        "conditional": folder / "conditional",
    }


def test_a_latent_run_records_its_autoencoder_and_trains_on_its_latents(runs):
    stored = RunDir(runs["latent"]).config_dict()
    manifest = json.loads((RunDir(runs["ae"]).latest_checkpoint() / "manifest.json").read_text())
    assert stored["latent"] == {"autoencoder": str(runs["ae"].resolve()),
                                "autoencoder_sha256": manifest["ema.safetensors"]}  # fmt: skip
    assert (stored["model"]["in_channels"], stored["model"]["image_size"]) == (2, 4)  # the latents' shape
    model = load(runs["latent"])
    assert model.sample_shape == (1, 8, 8) and model.space_shape == (2, 4, 4)
    [result] = model.sample_with_result(3, steps=4, trajectory_steps="all")
    assert result.samples.shape == (3, 1, 8, 8) and result.samples.abs().max() <= 1
    assert all(step.x_t.shape == step.x0_pred.shape == (3, 1, 8, 8) for step in result.trajectory)
    seen = []
    model.sample(2, steps=3, callback=lambda i, t, x_t, x0: seen.append((x_t.shape, x0.shape)))
    assert seen == [((2, 1, 8, 8), (2, 1, 8, 8))] * 3  # callbacks see images too
    one_batch, one_by_one = model.sample(3, steps=3, seed=5), model.sample(3, steps=3, seed=5, batch_size=1)
    assert torch.allclose(one_batch, one_by_one, atol=1e-5)  # image i depends on its seed alone (± rounding)


def test_a_latent_run_samples_evaluates_and_reports_through_the_cli(runs, tmp_path, capsys):
    assert main(["sample", str(runs["latent"]), "--n", "5", "--out", str(tmp_path / "s.npz")]) == 0
    assert np.load(tmp_path / "s.npz")["images"].shape == (5, 8, 8, 1)
    argv = ["eval", str(runs["latent"]), "--n", "40", "--metrics", "fd", "--json", str(tmp_path / "e.json")]
    assert main(argv) == 0
    assert json.loads((tmp_path / "e.json").read_text())["metrics"]["fd_classifier"] > 0
    assert main(["report", str(runs["latent"]), "--out", str(tmp_path / "poster.png")]) == 0
    assert (tmp_path / "poster.png").stat().st_size > 10_000
    capsys.readouterr()


def test_class_conditioning_and_guidance_work_on_latents(runs, tmp_path):
    out = tmp_path / "classes.npz"
    argv = [
        "sample",
        str(runs["conditional"]),
        "--class",
        "all",
        "--n",
        "1",
        "--guidance",
        "2",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    saved = np.load(out)
    assert saved["images"].shape == (10, 8, 8, 1) and saved["labels"].tolist() == list(range(10))


def test_editing_a_latent_run_encodes_first(runs, tmp_path, capsys):
    assert main(["sample", str(runs["latent"]), "--n", "1", "--out", str(tmp_path / "one.npz")]) == 0
    original = np.load(tmp_path / "one.npz")["images"][0, :, :, 0]  # (8, 8) uint8
    digit = tmp_path / "digit.png"
    Image.fromarray(original).save(digit)
    assert (
        main(["invert", str(runs["latent"]), str(digit), "--steps", "4", "--out", str(tmp_path / "i.npz")])
        == 0
    )
    inverted = np.load(tmp_path / "i.npz")
    assert inverted["latents"].shape == (1, 2, 4, 4) and inverted["reconstructions"].shape == (1, 8, 8, 1)
    argv = [
        "interpolate",
        str(runs["latent"]),
        "--images",
        str(digit),
        str(digit),
        "--num",
        "3",
        "--steps",
        "3",
    ]
    assert main([*argv, "--out", str(tmp_path / "between.npz")]) == 0
    argv = ["inpaint", str(runs["latent"]), str(digit), "--mask", "left", "--n", "2", "--steps", "6",
            "--jump-length", "2", "--resamples", "2", "--out", str(tmp_path / "filled.npz")]  # fmt: skip
    assert main(argv) == 0
    filled = np.load(tmp_path / "filled.npz")
    keep = ~filled["mask"]
    assert filled["images"].shape == (2, 8, 8, 1)
    assert np.array_equal(filled["images"][:, keep, 0], np.broadcast_to(original[keep], (2, keep.sum())))
    assert not np.array_equal(filled["images"][0, ~keep, 0], original[~keep])  # the left half is redrawn
    capsys.readouterr()


def _refused(argv: list[str], message: str, capsys: pytest.CaptureFixture) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert re.search(message, err), err


REFUSALS = [  # (the --latent run, more flags, the one line expected)
    ("missing", [], r"ddpm train: error: autoencoder run '.*missing' does not exist; train one with ddpm "
     r"train --kind autoencoder"),
    ("latent", [], r"'.*latent' is a run of model.kind = 'unet', not an autoencoder run; give a run of ddpm "
     r"train --kind autoencoder"),
    ("ae", ["--set", "data.image_size=7"], r"data 'digits' has 7×7 images, not divisible by the "
     r"autoencoder's downsample factor 2 \(.*ae\); set data.image_size to a multiple of 2"),
    ("ae", ["--set", "data.image_size=12"], r"data 'digits' has 1-channel 12×12 images; the autoencoder in "
     r".*ae was trained on 1-channel 8×8 images"),
    ("ae", ["--set", "data.channels=3"], r"data 'digits' has 3-channel 8×8 images; the autoencoder in .*ae "
     r"was trained on 1-channel 8×8 images"),
    ("ae", ["--kind", "autoencoder"], r"--latent trains a diffusion model on an autoencoder's latents; it "
     r"cannot be combined with --kind autoencoder"),
    ("ae", ["--data", "swissroll"], r"data 'swissroll' is 2-D points; latent runs need images"),
]  # fmt: skip


@pytest.mark.parametrize(("target", "extra", "message"), REFUSALS)
def test_a_bad_autoencoder_or_data_is_refused_in_one_line_with_nothing_written(
    runs, tmp_path, capsys, target, extra, message
):
    out = tmp_path / "out"
    argv = ["train", "--latent", str(runs["folder"] / target), "--steps", "1", "--out", str(out), *extra]
    _refused(argv, message, capsys)
    assert not out.exists()


def test_an_autoencoder_changed_after_the_latent_run_is_refused(runs, tmp_path, capsys):
    ae, latent = tmp_path / "ae", tmp_path / "latent"
    shutil.copytree(runs["ae"], ae)
    train(latent_config(ae, 3), latent, **QUIET)
    assert main(["sample", str(latent), "--n", "1", "--out", str(tmp_path / "before.png")]) == 0
    train(tiny_autoencoder_config(3, "run.seed=7"), ae, overwrite=True, **QUIET)  # other weights, same place
    changed = (
        r"autoencoder run '.*ae' has changed: none of its checkpoints holds the weights \(sha256 \w{12}…\)"
    )
    _refused(["sample", str(latent), "--n", "1", "--out", str(tmp_path / "after.png")], changed, capsys)
    assert not (tmp_path / "after.png").exists()
    log_before = (latent / "log.jsonl").read_bytes()
    _refused(
        ["train", "--latent", str(ae), "--resume", "--steps", "6", "--out", str(latent)], changed, capsys
    )
    assert (latent / "log.jsonl").read_bytes() == log_before
    assert RunDir(latent).latest_checkpoint().name == "step_0000003"


def test_an_autoencoder_run_is_no_model_to_sample(runs, tmp_path, capsys):
    _refused(["sample", str(runs["ae"]), "--out", str(tmp_path / "x.png")],
             r"is an autoencoder run \(latent diffusion's first stage\), which draws no samples; train "
             r"diffusion on its latents: ddpm train --latent", capsys)  # fmt: skip
    _refused(["eval", str(runs["latent"]), "--nll", "--n", "4"],
             r"--nll measures bits/dim of 8-bit images; .* is a latent diffusion run", capsys)  # fmt: skip
    assert not (tmp_path / "x.png").exists()
