"""`ddpm viz`: the pictures of a run, drawn with its own sampler."""

from __future__ import annotations

from ddpm.cli import main


def test_viz_writes_the_process_pictures_and_curves(digits_run, tmp_path, capsys):
    status = main(["viz", "all", str(digits_run), "--out-dir", str(tmp_path)])
    assert status == 0, capsys.readouterr().err
    names = {p.name for p in tmp_path.iterdir()}
    assert {"forward.png", "reverse.png", "reverse.gif", "curves.png", "schedule.png"} <= names
