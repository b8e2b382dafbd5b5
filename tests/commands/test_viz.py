"""`ddpm viz`: the pictures of a run, drawn with its own sampler."""

from __future__ import annotations

import numpy as np
from PIL import Image

from ddpm.cli import main


def test_viz_writes_the_process_pictures_and_curves(digits_run, tmp_path, capsys):
    status = main(["viz", "all", str(digits_run), "--out-dir", str(tmp_path)])
    assert status == 0, capsys.readouterr().err
    names = {p.name for p in tmp_path.iterdir()}
    assert {"forward.png", "reverse.png", "reverse.gif", "curves.png", "schedule.png"} <= names


def test_viz_draws_control_samples_real_for_a_control_run(control_run, tmp_path, capsys):
    assert main(["viz", "control", str(control_run), "--out-dir", str(tmp_path / "c")]) == 0
    assert {p.name for p in (tmp_path / "c").iterdir()} == {"control.png"}
    assert main(["viz", "all", str(control_run), "--out-dir", str(tmp_path / "all")]) == 0
    assert {"control.png", "forward.png", "curves.png"} <= {p.name for p in (tmp_path / "all").iterdir()}


def test_viz_control_of_a_run_without_a_branch_is_one_line_and_writes_nothing(digits_run, tmp_path, capsys):
    assert main(["viz", "control", str(digits_run), "--out-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "picture 'control' needs a ControlNet run" in err, err
    assert not (tmp_path / "out").exists()
    assert main(["viz", "all", str(digits_run), "--out-dir", str(tmp_path / "all")]) == 0
    assert "control.png" not in {p.name for p in (tmp_path / "all").iterdir()}


def test_viz_control_of_a_run_on_users_own_controls_pairs_them_by_name(control_base, tmp_path, capsys):
    from tests.train.test_control_folder import write_pairs

    write_pairs(tmp_path, skip=("0/0", "4/1"))
    (tmp_path / "data" / "0" / "0.png").unlink()  # every training image needs its control
    (tmp_path / "data" / "4" / "1.png").unlink()
    run = tmp_path / "run"
    data, controls = f"folder:{tmp_path / 'data'}", f"folder:{tmp_path / 'controls'}"
    argv = ["train", "--controlnet", str(control_base), "--control", controls, "--data", data, "--set",
            "data.image_size=8", "--set", "data.channels=1", "--steps", "2", "--out", str(run)]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    for extra in ("0/0", "4/1"):  # data images without controls are passed over by the pictures
        (tmp_path / "data" / f"{extra}.png").parent.mkdir(exist_ok=True)
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "data" / f"{extra}.png")
    assert main(["viz", "control", str(run), "--out-dir", str(tmp_path / "fig")]) == 0, (
        capsys.readouterr().err
    )
    assert (tmp_path / "fig" / "control.png").is_file()
