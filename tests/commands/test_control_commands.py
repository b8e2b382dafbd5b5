"""``ddpm train --controlnet`` and ``ddpm sample --control`` through the command line (Zhang, Rao & Agrawala
2023): class, guidance and control combine; bad input is one line, exit status 2, nothing written."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from ddpm.cli import main


@pytest.fixture(scope="module")
def cli_control_run(control_base, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli-control") / "run"
    assert main(["train", "--controlnet", str(control_base), "--control", "mask", "--steps", "2",
                 "--out", str(out)]) == 0  # fmt: skip
    return out


@pytest.fixture(scope="module")
def control_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("control-files")
    controls = folder / "controls"
    controls.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(np.where(rng.random((8, 8)) > 0.6, 255, 0).astype(np.uint8)).save(
            controls / f"{i}.png"
        )
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(folder / "big.png")
    np.savez(folder / "rgb.npz", images=np.zeros((2, 8, 8, 3), np.uint8))
    return {"controls": controls, "big": folder / "big.png", "rgb": folder / "rgb.npz"}


def test_a_control_run_samples_one_image_per_control_with_class_and_guidance(cli_control_run, control_files,
                                                                             tmp_path, capsys):  # fmt: skip
    out = tmp_path / "s.npz"
    argv = ["sample", str(cli_control_run), "--control", str(control_files["controls"]), "--class", "3,5",
            "--guidance", "2", "--steps", "4", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    with np.load(out) as saved:
        assert saved["images"].shape == (6, 8, 8, 1)  # 3 controls × 2 classes
        assert saved["labels"].tolist() == [3, 3, 3, 5, 5, 5]
    png = tmp_path / "s.png"
    assert main(["sample", str(cli_control_run), "--control", str(control_files["controls"] / "0.png"),
                 "--control-scale", "0.5", "--steps", "4", "--out", str(png)]) == 0  # fmt: skip
    assert png.is_file()


@pytest.mark.parametrize(
    "argv, message",
    [
        ("sample {run} --control {big}", r"control image '.*big\.png' is 16×16; this model needs 8×8"),
        ("sample {run} --control {rgb}", r"holds images of shape \(8, 8, 3\); the model needs \(8, 8, 1\)"),
        ("sample {run} --control {missing}", r"control '.*missing' does not exist"),
        ("sample {base} --control {controls}", r"--control needs a ControlNet run"),
        ("sample {run} --control {controls} --control-scale nan", r"control_scale nan is invalid"),
        (
            "train --controlnet {base} --control blur",
            r"control\.kind='blur' is not allowed; choose one of canny",
        ),
        ("train --controlnet {missing} --control canny", r"base run '.*missing' does not exist"),
        ("train --controlnet {base}", r"--controlnet needs --control canny\|mask\|lowres\|gray\|folder:PATH"),
        ("train --control canny --latent {base}", r"--control without --controlnet .* with --latent"),
        (
            "train --controlnet {base} --control canny --preset digits",
            r"--preset does not apply to --controlnet",
        ),
    ],
)
def test_bad_control_input_is_one_line_and_writes_nothing(argv, message, cli_control_run, control_base,
                                                          control_files, tmp_path, capsys):  # fmt: skip
    places = {"run": cli_control_run, "base": control_base, "missing": tmp_path / "missing", **control_files}
    out = tmp_path / ("out.png" if argv.startswith("sample") else "out")
    args = [part.format(**places) for part in argv.split()] + ["--out", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and re.search(message, err), err
    assert not out.exists()
