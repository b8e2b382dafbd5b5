"""`ddpm report`: one load of the checkpoint feeds the samples, the strips and the quick metrics."""

from __future__ import annotations

from ddpm import model as model_module
from ddpm.cli import main
from ddpm.commands.report import describe_sampler
from ddpm.model import SamplingConfig


def test_the_poster_loads_the_checkpoint_once(digits_run, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DDPM_DATA", str(tmp_path / "cache"))
    reads = []
    read_weights = model_module.read_weights
    monkeypatch.setattr(
        model_module, "read_weights", lambda *a, **k: reads.append(a) or read_weights(*a, **k)
    )
    out = tmp_path / "poster.png"
    status = main(["report", str(digits_run), "--out", str(out), "--page", "a4", "--device", "cpu"])
    assert status == 0, capsys.readouterr().err
    assert out.is_file()
    assert len(reads) == 1  # was six: the pictures, then the metrics at the run's steps and at 5/10/20/50


def test_the_caption_names_the_sampler_that_drew_the_samples():
    settings = SamplingConfig("dpm++2m_sde", steps=20, spacing="trailing", eps_scale=1.06)
    assert describe_sampler(settings) == "dpm++2m_sde with 20 steps (trailing spacing, ε / 1.06)"
    assert describe_sampler(SamplingConfig("ddim", steps=50)) == "ddim with 50 steps (η = 0)"


def test_a_control_run_report_measures_adherence_at_three_levels(control_run, tmp_path, monkeypatch, capsys):
    from ddpm import viz
    from ddpm.command_support import open_run
    from ddpm.commands.report import control_panel

    panel = control_panel(open_run(control_run, device="cpu"), n=12)
    assert panel.kind == "canny" and panel.measure == "edge F1" and panel.n == 12
    assert set(panel.levels) == {"controlled", "chance", "ceiling"} and panel.levels["ceiling"] == 1.0
    assert all(0.0 <= value <= 1.0 for value in panel.levels.values())
    assert panel.controls.shape == (8, 1, 8, 8) and panel.samples.shape == panel.real.shape == (8, 1, 8, 8)
    monkeypatch.setenv("DDPM_DATA", str(tmp_path / "cache"))
    drawn = []
    make_poster = viz.make_poster
    monkeypatch.setattr(
        viz, "make_poster", lambda *a, **k: drawn.append(k["control"]) or make_poster(*a, **k)
    )
    out = tmp_path / "poster.png"
    assert main(["report", str(control_run), "--out", str(out), "--page", "a4", "--device", "cpu"]) == 0
    assert out.is_file() and drawn[0].n == 64 and drawn[0].levels["ceiling"] == 1.0
