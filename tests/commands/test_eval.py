"""`ddpm eval` and evaluation during training."""

from __future__ import annotations

import json

import numpy as np

from ddpm.cli import main
from ddpm.rundir import RunDir, verify_checkpoint
from ddpm.train.run import train
from tests.train.conftest import tiny_digits_config

TINY_NET = ["--set", "model.base_channels=16", "--set", "model.channel_mult=[1, 2]",
            "--set", "model.num_res_blocks=1", "--set", "model.num_groups=8",
            "--set", "model.attention_resolutions=[]"]  # fmt: skip


def test_training_evaluates_and_keeps_the_best_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("DDPM_DATA", str(tmp_path / "cache"))  # classifier cache stays in the test
    config = tiny_digits_config(eval_every=3, eval_samples=20)
    train(config, tmp_path / "run", log=lambda *_: None)
    records = [json.loads(line) for line in (tmp_path / "run" / "eval.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [3, 6]
    assert all(r["fd_classifier"] > 0 and r["score"] == r["fd_classifier"] for r in records)
    best = verify_checkpoint(tmp_path / "run" / "checkpoints" / "best")
    assert best["step"] == min(records, key=lambda r: r["score"])["step"]


def test_eval_command_scores_a_samples_file(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DDPM_DATA", str(tmp_path / "cache"))
    noise = np.random.default_rng(0).integers(0, 256, size=(40, 8, 8, 1), dtype=np.uint8)
    np.savez(tmp_path / "noise.npz", images=noise)
    status = main(["eval", str(tmp_path / "noise.npz"), "--data", "digits", "--n", "40",
                   "--json", str(tmp_path / "r.json")])  # fmt: skip
    assert status == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["metrics"]["n"] == 40 and report["metrics"]["fd_classifier"] > 1
    assert "fd_classifier" in capsys.readouterr().out


def test_eval_of_a_samples_file_needs_data(tmp_path, capsys):
    np.savez(tmp_path / "s.npz", images=np.zeros((4, 8, 8, 1), dtype=np.uint8))
    assert main(["eval", str(tmp_path / "s.npz")]) == 2
    assert "--data is required to evaluate a samples file" in capsys.readouterr().err


def test_eval_refuses_a_bad_eps_scale_before_loading_anything(tmp_path, capsys):
    assert main(["eval", str(tmp_path / "missing"), "--eps-scale", "0"]) == 2
    err = capsys.readouterr().err
    assert (
        "--eps-scale 0.0 is invalid; give a finite number > 0 (1 = off)" in err and len(err.splitlines()) == 1
    )


def test_eval_of_a_run_trained_at_a_resized_image_size(tmp_path, monkeypatch, capsys):
    # The run's whole data section (size and channels too) shapes the real data its samples meet.
    monkeypatch.setenv("DDPM_DATA", str(tmp_path / "cache"))
    run_dir = tmp_path / "run16"
    status = main(["train", "--data", "digits", "--out", str(run_dir), "--steps", "2", "--batch-size", "8",
                   "--set", "data.image_size=16", "--set", "run.sample_every=0",
                   "--set", "run.preview_images=4", "--set", "run.preview_steps=3", *TINY_NET])  # fmt: skip
    assert status == 0, capsys.readouterr().err
    status = main(["eval", str(run_dir), "--n", "20", "--metrics", "fd", "--json", str(tmp_path / "r.json")])
    assert status == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["metrics"]["n"] == 20 and report["metrics"]["fd_classifier"] > 0
    run = RunDir(run_dir).config_dict()["run"]  # drawn with the run's own sampler, as the report says
    assert (report["sampler"], report["steps"]) == (run["preview_sampler"], run["preview_steps"])
