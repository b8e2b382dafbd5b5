"""`ddpm eval AE_RUN`: an autoencoder run measured by its reconstructions of held-out images (issue 20):
PSNR, MSE and L1 as computed here independently, the FD of the reconstructions beside the real-data floor
of ``ddpm.eval.real_floor``, the latents' statistics; and the flags of a diffusion model's evaluation
refused in one line."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from ddpm.cli import main
from ddpm.command_support import open_autoencoder
from ddpm.commands.eval import reconstruction as reconstruction_command
from ddpm.data import load_dataset
from ddpm.eval import real_floor
from ddpm.eval.reference import REFERENCE_SUBSET_SEED, subset_index
from ddpm.train.run import train
from tests.train.test_autoencoder_run import tiny_autoencoder_config

# a high learning rate, no warm-up and a short EMA: 60 steps reconstruct digits clearly better than their
# mean image does (about 15 dB against 11)
FAST = ("optim.lr=5e-3", "optim.warmup_steps=0", "optim.ema_decay=0.9", "run.checkpoint_every=0",
        "run.sample_every=0", "run.log_every=100")  # fmt: skip
N = 40


@pytest.fixture(scope="module")
def autoencoder_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A digits autoencoder (f=2: 8×8 → 2×4×4) trained for 60 steps (a few seconds)."""
    run_dir = tmp_path_factory.mktemp("autoencoder") / "run"
    train(tiny_autoencoder_config(60, *FAST), run_dir, log=lambda *_: None)
    return run_dir


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("eval-cache")


@pytest.fixture
def quiet_cache(cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # the feature classifier is trained once for these tests, and its cache stays out of the user's data root
    monkeypatch.setenv("DDPM_DATA", str(cache_dir))
    return cache_dir


def _eval(run_dir: Path, out: Path, *flags: str) -> dict:
    assert main(["eval", str(run_dir), "--n", str(N), "--metrics", "fd", "--device", "cpu",
                 "--json", str(out), *flags]) == 0  # fmt: skip
    return json.loads(out.read_text())


def _psnr_db(images: np.ndarray, references: np.ndarray) -> np.ndarray:
    """Per-image PSNR of images in [0, 1] (peak 1), written out here rather than taken from the package."""
    mse = ((images - references) ** 2).reshape(len(images), -1).mean(axis=1)
    return 10 * np.log10(1.0 / mse)


def test_an_autoencoder_run_reports_psnr_fd_the_floor_and_its_latents(
    autoencoder_run, tmp_path, quiet_cache, capsys
):
    report = _eval(autoencoder_run, tmp_path / "r.json")
    assert (report["data"], report["split"], report["floor_split"]) == ("digits", "test", "train")
    assert (report["weights"], report["latents"], report["pixel_range"]) == (
        "ema",
        "posterior mean",
        "[0, 1]",
    )
    assert report["downsample_factor"] == 2 and report["latent_shape"] == [2, 4, 4] and report["step"] == 60
    metrics, floor = report["metrics"], report["floor"]
    assert metrics["n"] == floor["n"] == N and metrics["seconds"] > 0
    assert metrics["fd_classifier"] >= 0 and floor["fd_classifier"] > 0

    # The same N test images (the reference subset every eval scores against) reconstructed here.
    test = load_dataset("digits", split="test")
    originals = test.batch(subset_index(len(test), N, REFERENCE_SUBSET_SEED))
    codec = open_autoencoder(autoencoder_run)
    with torch.no_grad():
        latents = codec.encode(originals)  # posterior mean, normalised
        reconstructions = codec.decode(latents).clamp(-1, 1)
    x, r = ((originals.double() + 1) / 2).numpy(), ((reconstructions.double() + 1) / 2).numpy()
    assert metrics["psnr"] == pytest.approx(_psnr_db(r, x).mean(), rel=1e-6)
    assert metrics["mse"] == pytest.approx(((r - x) ** 2).mean(), rel=1e-6)
    assert metrics["l1"] == pytest.approx(np.abs(r - x).mean(), rel=1e-6)
    # Trained, it beats reconstructing every image as the mean of these images by a wide margin.
    mean_image = np.broadcast_to(x.mean(axis=0), x.shape)
    assert metrics["psnr"] > _psnr_db(mean_image, x).mean() + 2
    per_channel = latents.transpose(0, 1).flatten(1).double()
    stats = report["latent_stats"]
    assert stats["mean"] == pytest.approx(per_channel.mean(1).tolist(), abs=1e-5)
    assert stats["std"] == pytest.approx(per_channel.std(1).tolist(), rel=1e-5)
    assert all(abs(m) < 0.25 for m in stats["mean"]) and all(abs(s - 1) < 0.25 for s in stats["std"])

    out = capsys.readouterr().out
    assert "reconstructions of 40 images of the test split of digits by the EMA weights (posterior mean), " \
        "f=2, latents 2×4×4" in out  # fmt: skip
    assert "real floor (train vs test)" in out and "latent channel" in out and "encode + decode:" in out


def test_the_floor_is_real_floors_train_images_against_the_same_reference(
    autoencoder_run, tmp_path, quiet_cache
):
    report = _eval(autoencoder_run, tmp_path / "r.json", "--seed", "3")
    expected = real_floor("digits", N, metrics=["fd"], seed=3, progress=False)
    assert report["floor"]["fd_classifier"] == pytest.approx(expected["fd_classifier"], rel=1e-9)
    # Scored against the train split, the floor's real images come from the test split instead.
    on_train = _eval(autoencoder_run, tmp_path / "t.json", "--split", "train")
    assert on_train["floor_split"] == "test" and on_train["floor"]["fd_classifier"] > 0


def test_a_posterior_sample_is_seeded_per_image(autoencoder_run, tmp_path, quiet_cache):
    mean = _eval(autoencoder_run, tmp_path / "mean.json")
    whole = _eval(autoencoder_run, tmp_path / "a.json", "--sample-posterior")
    split = _eval(autoencoder_run, tmp_path / "b.json", "--sample-posterior", "--batch-size", "7")
    assert whole["latents"] == "posterior sample"
    assert whole["metrics"]["psnr"] == pytest.approx(split["metrics"]["psnr"], rel=1e-6)
    assert whole["metrics"]["psnr"] != mean["metrics"]["psnr"]


def test_feature_net_none_scores_pixels_alone_without_a_feature_network(
    autoencoder_run, tmp_path, quiet_cache, capsys, monkeypatch
):
    full = _eval(autoencoder_run, tmp_path / "full.json")
    out = tmp_path / "pixels.json"

    def no_features(*args, **kwargs):
        raise AssertionError("--feature-net none must not build a feature network")

    monkeypatch.setattr(reconstruction_command, "prepare_real", no_features)
    assert main(["eval", str(autoencoder_run), "--n", str(N), "--feature-net", "none", "--device", "cpu",
                 "--json", str(out)]) == 0  # fmt: skip
    pixels = json.loads(out.read_text())
    assert pixels["fd"] is False and full["fd"] is True and pixels["floor"] is None
    assert set(pixels["metrics"]) == {"n", "psnr", "mse", "l1", "seconds"}
    for key in ("psnr", "mse", "l1"):  # the same images, reconstructed the same way
        assert pixels["metrics"][key] == pytest.approx(full["metrics"][key], rel=1e-9)
    assert pixels["latent_stats"] == full["latent_stats"]
    assert "no fd, no floor" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--feature-net", "none", "--metrics", "fd", "kid"],
         r"^--metrics fd kid needs a feature network; --feature-net none scores PSNR, MSE and L1 only "
         r"\(leave --metrics out\)$"),
        (["--sampler", "ddim"], r"^--sampler: sampler flags do not apply to an autoencoder run \('.*run'\), "
                                r"which draws no samples; ddpm eval measures its reconstructions$"),
        (["--steps", "4", "--eta", "0.5"], r"^--steps, --eta: sampler flags do not apply to an autoencoder"),
        (["--nll"], r"^--nll: the likelihood bound is a diffusion model's; an autoencoder run \('.*'\) is "
                    r"measured by its reconstructions \(leave --nll out\)$"),
        (["--nll-terms", "3", "--nll-variance", "beta"], r"^--nll-terms, --nll-variance: the likelihood"),
        (["--data", "swissroll"], r"^data 'swissroll' is 2-D points; an autoencoder run reconstructs imag"),
        (["--n", "1"], r"^--n 1 is invalid; it must be an integer ≥ 2$"),
    ],
)  # fmt: skip
def test_what_does_not_apply_to_an_autoencoder_run_is_refused_in_one_line(
    autoencoder_run, tmp_path, flags, message, capsys
):
    assert main(["eval", str(autoencoder_run), "--json", str(tmp_path / "r.json"), *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert re.search(message, err.removeprefix("ddpm eval: error: ")), err
    assert not (tmp_path / "r.json").exists()


def test_sample_posterior_is_refused_where_there_is_no_autoencoder(tmp_path, capsys):
    np.savez(tmp_path / "s.npz", images=np.zeros((4, 8, 8, 1), dtype=np.uint8))
    assert main(["eval", str(tmp_path / "s.npz"), "--data", "digits", "--sample-posterior"]) == 2
    err = capsys.readouterr().err
    assert re.search(
        r"--sample-posterior applies to autoencoder runs only; '.*s\.npz' is not one$", err.strip()
    )
