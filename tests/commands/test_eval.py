"""`ddpm eval` and evaluation during training."""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import pytest

from ddpm.cli import main
from ddpm.rundir import RunDir, verify_checkpoint
from ddpm.train.presets import get_preset
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


def test_eval_reports_memorisation_replayed_training_images_are_flagged(tmp_path, monkeypatch):
    from ddpm.data import load_dataset

    monkeypatch.setenv("DDPM_DATA", str(tmp_path / "cache"))
    train = load_dataset("digits", split="train")
    copies = train.data[:40].permute(0, 2, 3, 1).numpy()  # uint8 (N, H, W, C): replayed training images
    np.savez(tmp_path / "copies.npz", images=copies)
    noise = np.random.default_rng(0).integers(0, 256, size=(40, 8, 8, 1), dtype=np.uint8)
    np.savez(tmp_path / "noise.npz", images=noise)
    shares = {}
    for name in ("copies", "noise"):
        assert main(["eval", str(tmp_path / f"{name}.npz"), "--data", "digits", "--n", "40",
                     "--json", str(tmp_path / f"{name}.json")]) == 0  # fmt: skip
        metrics = json.loads((tmp_path / f"{name}.json").read_text())["metrics"]
        shares[name] = metrics["memorised_share"]
        assert metrics["memorised_share_expected"] == 0.05
    assert shares == {"copies": 1.0, "noise": 0.0}


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


# --- ddpm eval --nll ------------------------------------------------------------------------------------


def _nll(run_dir, tmp_path, *flags):
    out = tmp_path / f"nll{len(list(tmp_path.glob('nll*.json')))}.json"
    assert main(["eval", str(run_dir), "--nll", *flags, "--json", str(out)]) == 0
    return json.loads(out.read_text())


def test_nll_reports_the_exact_bound_in_bits_per_dim_with_its_terms(digits_run, tmp_path, capsys):
    report = _nll(digits_run, tmp_path, "--n", "2")
    nll = report["nll"]
    assert (report["split"], report["data"], nll["n"], nll["exact"], nll["terms_evaluated"]) == (
        "test", "digits", 2, True, 1000,
    )  # fmt: skip
    assert nll["variance"] == "beta" and nll["bits_per_dim"] > 0 and nll["prior_bpd"] < 1e-3
    parts = nll["prior_bpd"] + nll["decoder_bpd"] + nll["kl_bpd"]
    assert abs(parts - nll["bits_per_dim"]) < 1e-9
    table = capsys.readouterr().out
    assert "exact, all 1000 terms" in table and "decoder L_0" in table and "KL L_1..L_999" in table


def test_nll_estimate_is_flagged_and_does_not_depend_on_the_batch_size(digits_run, tmp_path, capsys):
    one = _nll(digits_run, tmp_path, "--n", "3", "--nll-terms", "12", "--batch-size", "1")["nll"]
    three = _nll(digits_run, tmp_path, "--n", "3", "--nll-terms", "12")["nll"]
    assert not one["exact"] and one["terms_evaluated"] <= 12
    # the same noise per image; only the network's float32 arithmetic differs with the batch size
    assert abs(one["bits_per_dim"] - three["bits_per_dim"]) < 1e-6
    assert "ESTIMATE from" in capsys.readouterr().out
    beta_tilde = _nll(digits_run, tmp_path, "--n", "3", "--nll-terms", "12", "--nll-variance", "beta_tilde")
    assert beta_tilde["nll"]["variance"] == "beta_tilde"
    assert beta_tilde["nll"]["bits_per_dim"] != three["bits_per_dim"]


def test_nll_of_a_learned_variance_model_uses_its_variance(tmp_path, capsys):
    config = tiny_digits_config()
    config = dataclasses.replace(config, diffusion=dataclasses.replace(config.diffusion, learn_variance=True,
                                                                       loss="hybrid"))  # fmt: skip
    train(config, tmp_path / "hybrid", log=lambda *_: None)
    assert _nll(tmp_path / "hybrid", tmp_path, "--n", "2", "--nll-terms", "8")["nll"]["variance"] == "learned"
    assert main(["eval", str(tmp_path / "hybrid"), "--nll", "--nll-variance", "beta"]) == 2
    assert "--nll-variance applies to fixed variances; " in capsys.readouterr().err


def test_nll_of_a_points_model_is_refused(tmp_path, capsys):
    config = get_preset("swissroll")
    config = dataclasses.replace(
        config, data=dataclasses.replace(config.data, num_points=64),
        run=dataclasses.replace(config.run, steps=1, batch_size=16, preview_images=4, preview_steps=2),
    )  # fmt: skip
    train(config, tmp_path / "points", log=lambda *_: None)
    assert main(["eval", str(tmp_path / "points"), "--nll"]) == 2
    err = capsys.readouterr().err
    assert "--nll measures bits/dim of 8-bit images; " in err and "is a model of 2-D points" in err
    assert len(err.splitlines()) == 1


@pytest.mark.parametrize(
    "flags, message",
    [
        ("{run} --nll-terms 10", r"--nll-terms and --nll-variance apply to --nll only; add --nll"),
        ("{run} --nll --nll-terms 1", r"--nll-terms 1 is invalid; it must be an integer ≥ 2"),
        ("{run} --nll --n 0", r"--n 0 is invalid; it must be an integer ≥ 1"),
        ("{run} --nll --metrics fd", r"--nll measures the likelihood, not samples; run eval without --nll"),
        ("{run} --nll --sampler ddim --steps 5", r"--sampler, --steps: sampler flags do not apply to --nll"),
        ("{run} --nll --nll-variance large", r"argument --nll-variance: invalid choice: 'large'"),
        ("{samples} --nll", r"--nll needs a model \(a run directory or checkpoint\), not samples"),
        ("{run} --nll --split validation", r"split 'validation' is not available for 'digits'"),
    ],
)
def test_bad_nll_flags_are_one_line_errors(digits_run, user_files, flags, message, capsys):
    argv = flags.format(run=digits_run, samples=user_files["samples"]).split()
    assert main(["eval", *argv]) == 2
    err = capsys.readouterr().err
    assert re.search(message, err) and len(err.splitlines()) == 1, err


def test_nll_of_a_diffusers_folder_needs_data(diffusers_folders, capsys):
    assert main(["eval", str(diffusers_folders["flat"]), "--nll", "--n", "2", "--nll-terms", "4"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "--data is required for a diffusers model folder" in err
