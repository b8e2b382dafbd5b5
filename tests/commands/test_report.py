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
