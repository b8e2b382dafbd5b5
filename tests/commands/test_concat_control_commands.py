"""A concat control run (ControlNet's baseline, issue 21) through the command line: ``ddpm train --data SPEC
--control KIND`` trains it, ``ddpm sample --control`` combines its controls with class and guidance, ``ddpm
sample`` without ``--control`` draws with the control dropped, ``ddpm eval`` reports the adherence block
(controlled, control dropped, real images) and ``ddpm viz control`` draws it; bad input is one line, exit
status 2, nothing written."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

import ddpm
from ddpm.cli import main
from ddpm.nets.concat_control import BLANK
from tests.conftest import TINY_SETS

STEPS = ["--steps", "3"]
SCALE_REFUSED = r"--control-scale 0\.5 applies to ControlNet runs; this concat run has .* no strength knob"
AUTOENCODER_REFUSED = r"--control without --controlnet .* cannot be combined with --kind autoencoder"


@pytest.fixture(scope="module")
def cli_concat_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli-concat") / "run"
    sets = [part for value in (*TINY_SETS, "data.class_conditional=true") for part in ("--set", value)]
    argv = ["train", "--data", "digits", "--control", "mask", "--steps", "2", "--out", str(out), *sets]
    assert main(argv) == 0
    return out


@pytest.fixture(scope="module")
def masks(tmp_path_factory):
    folder = tmp_path_factory.mktemp("concat-files")
    (folder / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        mask = np.where(rng.random((8, 8)) > 0.6, 255, 0).astype(np.uint8)
        Image.fromarray(mask).save(folder / f"masks/{i}.png")
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(folder / "big.png")
    np.savez(folder / "rgb.npz", images=np.zeros((2, 8, 8, 3), np.uint8))
    return {"masks": folder / "masks", "big": folder / "big.png", "rgb": folder / "rgb.npz"}


def test_a_concat_run_samples_with_controls_class_and_guidance(cli_concat_run, masks, tmp_path):
    out = tmp_path / "s.npz"
    assert main(["sample", str(cli_concat_run), "--control", str(masks["masks"]), "--class", "3,5",
                 "--guidance", "2", *STEPS, "--out", str(out)]) == 0  # fmt: skip
    with np.load(out) as saved:
        assert saved["images"].shape == (6, 8, 8, 1) and saved["labels"].tolist() == [3, 3, 3, 5, 5, 5]


def test_without_control_a_concat_run_samples_with_the_control_dropped(cli_concat_run, tmp_path):
    out = tmp_path / "plain.npz"
    assert main(["sample", str(cli_concat_run), "--n", "3", *STEPS, "--out", str(out)]) == 0
    model = ddpm.load(cli_concat_run)
    blank = torch.full((3, 1, 8, 8), BLANK)
    expected = ddpm.to_uint8(model.sample(3, control=blank, steps=3))
    with np.load(out) as saved:
        assert np.array_equal(saved["images"], expected)


def test_eval_reports_the_adherence_of_controlled_and_dropped_samples(cli_concat_run, tmp_path, capsys,
                                                                      monkeypatch):  # fmt: skip
    monkeypatch.setenv("DDPM_DATA", str(tmp_path / "cache"))
    out = tmp_path / "r.json"
    assert main(["eval", str(cli_concat_run), "--metrics", "fd", "--device", "cpu", "--n", "8", *STEPS,
                 "--json", str(out)]) == 0  # fmt: skip
    report = json.loads(out.read_text())
    block = report["adherence"]
    assert (block["control"], block["mode"], block["measure"]) == ("mask", "concat", "mask_iou")
    assert block["n"] == 8 and block["ceiling"] == 1.0
    assert all(0.0 <= block[level] <= 1.0 for level in ("controlled", "chance", "ceiling"))
    assert report["metrics"]["n"] == report["base_metrics"]["n"] == 8
    text = capsys.readouterr().out
    assert "controlled  control dropped" in text and "chance (control dropped)" in text


def test_viz_draws_control_samples_and_real_images(cli_concat_run, tmp_path):
    assert main(["viz", "control", str(cli_concat_run), "--out-dir", str(tmp_path), "--device", "cpu"]) == 0
    assert (tmp_path / "control.png").is_file()


@pytest.mark.parametrize(
    "argv, message",
    [
        ("sample {run} --control {big}", r"control image '.*big\.png' is 16×16; this model needs 8×8"),
        ("sample {run} --control {rgb}", r"holds images of shape \(8, 8, 3\); the model needs \(8, 8, 1\)"),
        ("sample {run} --control {masks} --control-scale 0.5", SCALE_REFUSED),
        ("sample {run} --control-scale 1", r"--control-scale 1\.0 needs --control IMAGE_OR_DIR"),
        ("train --data digits --control blur", r"--control 'blur': control\.kind='blur' is not allowed"),
        ("train --data digits --control folder:", r"--control folder:PATH needs the folder of control"),
        ("train --data digits --control mask --kind autoencoder", AUTOENCODER_REFUSED),
        ("train --data swissroll --control mask", r"a control run .* needs a U-Net of images"),
        ("export {run} {out}", r"a concat control run cannot be exported to diffusers"),
    ],
)
def test_bad_concat_input_is_one_line_and_writes_nothing(argv, message, cli_concat_run, masks, tmp_path,
                                                         capsys):  # fmt: skip
    out = tmp_path / ("out.png" if argv.startswith("sample") else "out")
    places = {"run": cli_concat_run, "out": out, **masks}
    args = [part.format(**places) for part in argv.split()]
    assert main(args if "{out}" in argv else [*args, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and re.search(message, err), err
    assert not out.exists()
