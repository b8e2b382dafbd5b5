"""`ddpm eval` and evaluation during training."""

import json

import numpy as np

from ddpm.cli import main
from ddpm.train.checkpoint import verify_checkpoint
from ddpm.train.run import train
from tests.train.conftest import tiny_digits_config


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
