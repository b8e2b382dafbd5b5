"""`ddpm viz`: the pictures of a run, drawn with its own sampler."""

from __future__ import annotations

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
