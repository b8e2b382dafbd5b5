"""`ddpm export RUN --format diffusers OUT_DIR`: a folder diffusers loads and runs, drawing our images;
written whole or not at all; refusals in one line."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL as DiffusersAutoencoderKL
from diffusers import DDIMPipeline, DDIMScheduler, DDPMPipeline, LDMPipeline

from ddpm.cli import main
from ddpm.command_support import open_autoencoder, open_run
from ddpm.commands import export as export_command
from ddpm.diffusion.samplers import sample_seeds
from ddpm.model import load, to_uint8
from ddpm.train.run import train
from tests.test_latent import latent_config
from tests.train.test_autoencoder_run import tiny_autoencoder_config

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning")


def run_cli(capsys, *argv: object) -> tuple[int, str, str]:
    status = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return status, captured.out.strip(), captured.err.strip()


@pytest.fixture(scope="module")
def points_run(tmp_path_factory: pytest.TempPathFactory) -> str:
    run_dir = tmp_path_factory.mktemp("points") / "run"
    status = main(["train", "--data", "swissroll", "--out", str(run_dir), "--steps", "2",
                   "--batch-size", "16", "--set", "run.sample_every=0", "--set", "run.preview_images=4",
                   "--set", "run.checkpoint_every=2"])  # fmt: skip
    assert status == 0
    return str(run_dir)


def _as_pipeline_images(samples: torch.Tensor) -> np.ndarray:
    return (samples / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()


def test_an_exported_run_runs_in_diffusers_with_our_images(digits_run, tmp_path, capsys):
    out = tmp_path / "exported"
    status, printed, err = run_cli(capsys, "export", digits_run, "--format", "diffusers", out)
    assert status == 0, err
    assert printed == str(out) and sorted(p.name for p in out.iterdir()) == ["model_index.json", "scheduler",
                                                                             "unet"]  # fmt: skip
    pipeline = DDPMPipeline.from_pretrained(out)  # loads...
    seeds = sample_seeds(3, 2)
    theirs = pipeline(batch_size=2, generator=[torch.Generator().manual_seed(s) for s in seeds],
                      num_inference_steps=5, output_type="np").images  # ...and runs  # fmt: skip
    ours = load(digits_run)  # the EMA weights, as exported
    expected = _as_pipeline_images(ours.sample(seeds=seeds, n=2, sampler="ddpm", steps=5))
    assert theirs.shape == (2, 8, 8, 1) and np.abs(theirs - expected).max() <= 1e-4
    ddim = DDIMPipeline(unet=pipeline.unet, scheduler=DDIMScheduler.from_config(pipeline.scheduler.config))
    theirs = ddim(batch_size=2, generator=[torch.Generator().manual_seed(s) for s in seeds], eta=0.0,
                  num_inference_steps=5, use_clipped_model_output=True, output_type="np").images  # fmt: skip
    drawn = ours.sample(seeds=seeds, n=2, sampler="ddim", steps=5, eta=0.0, eps_scale=1.0)
    expected = _as_pipeline_images(drawn)
    assert np.abs(theirs - expected).max() <= 1e-4


def test_the_export_reads_back_as_the_same_model(digits_run, tmp_path, capsys):
    out = tmp_path / "exported"
    assert run_cli(capsys, "export", digits_run, out)[0] == 0  # --format diffusers is the default
    again = tmp_path / "again.npz"
    status, _, err = run_cli(capsys, "sample", out, "--n", 3, "--sampler", "ddpm", "--steps", 4,
                             "--out", again)  # fmt: skip
    assert status == 0, err
    expected = to_uint8(load(digits_run).sample(3, sampler="ddpm", steps=4))
    assert np.array_equal(np.load(again)["images"], expected)


def test_a_class_conditional_run_exports_with_a_note_on_labels(conditional_run, tmp_path, capsys):
    out = tmp_path / "cond"
    status, printed, err = run_cli(capsys, "export", conditional_run, out)
    assert status == 0, err
    assert json.loads((out / "unet" / "config.json").read_text())["num_class_embeds"] == 11
    assert "DDPMPipeline passes no class_labels" in printed.splitlines()[1]


def test_a_non_empty_out_dir_is_refused_and_kept_unless_overwrite(digits_run, tmp_path, capsys):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    status, _, err = run_cli(capsys, "export", digits_run, out)
    assert status == 2 and len(err.splitlines()) == 1
    assert "exists and is not empty; give --overwrite to replace it" in err
    assert (out / "keep.txt").read_text() == "mine"
    status, _, err = run_cli(capsys, "export", digits_run, out, "--overwrite")
    assert status == 0, err
    assert not (out / "keep.txt").exists() and (out / "model_index.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]  # no staging or previous folder left
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run_cli(capsys, "export", digits_run, empty)[0] == 0  # an empty folder is fine


def test_a_failure_part_way_leaves_the_out_dir_as_it_was(digits_run, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")

    def half_written(model, folder):
        (folder / "unet").mkdir()
        raise OSError("No space left on device")

    monkeypatch.setattr(export_command, "export_model", half_written)
    status, _, err = run_cli(capsys, "export", digits_run, out, "--overwrite")
    assert status == 1 and err == "ddpm export: error: No space left on device"
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_points_run_is_refused(points_run, tmp_path, capsys):
    status, _, err = run_cli(capsys, "export", points_run, tmp_path / "out")
    assert status == 2 and len(err.splitlines()) == 1
    assert "a model of points (MLPDenoiser) cannot be exported to diffusers: UNet2DModel holds image" in err
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def latent_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-step digits latent run on a 6-step f=2 autoencoder (2×4×4 latents; dpm++2m_sde its own sampler)."""
    folder = tmp_path_factory.mktemp("latent")
    train(tiny_autoencoder_config(6), folder / "ae", log=lambda *_: None)
    train(latent_config(folder / "ae", 2), folder / "latent", log=lambda *_: None)
    return folder / "latent"


def test_a_latent_run_exports_as_an_ldm_pipeline_drawing_our_ddim_samples(latent_run, tmp_path, capsys):
    """LDMPipeline draws x_T row by row from the generators it is given, as our sampler does from the
    per-sample seeds: the same seeds give both the same x_T, then each runs its own DDIM and decoder."""
    out = tmp_path / "ldm"
    status, printed, err = run_cli(capsys, "export", latent_run, out)
    assert status == 0, err
    assert printed.splitlines() == [str(out), (
        "note: LDMPipeline samples with DDIM only; this run's own sampler is dpm++2m_sde: ddpm sample RUN "
        "--sampler ddim --eta 0 --eps-scale 1 --spacing uniform --steps S draws what "
        "LDMPipeline(num_inference_steps=S, eta=0) draws")]  # fmt: skip
    assert sorted(p.name for p in out.iterdir()) == ["model_index.json", "scheduler", "unet", "vqvae"]
    pipeline = LDMPipeline.from_pretrained(out)
    pipeline.set_progress_bar_config(disable=True)
    seeds = sample_seeds(3, 2)
    theirs = pipeline(batch_size=2, generator=[torch.Generator().manual_seed(s) for s in seeds], eta=0.0,
                      num_inference_steps=4, output_type="np").images  # fmt: skip
    ours = load(latent_run)
    drawn = ours.sample(seeds=seeds, n=2, sampler="ddim", steps=4, eta=0.0, eps_scale=1.0, spacing="uniform")
    assert theirs.shape == (2, 8, 8, 1) and theirs.std() > 0.05
    assert np.abs(theirs - _as_pipeline_images(drawn)).max() <= 1e-4
    z = torch.randn(3, 2, 4, 4, generator=torch.Generator().manual_seed(0))  # normalised latents
    with torch.no_grad():
        decoded = pipeline.vqvae.decode(z).sample
    torch.testing.assert_close(decoded, ours.codec.decode(z), rtol=0, atol=1e-5)  # normalisation folded in


def test_an_ldm_export_reads_back_and_samples_as_the_run(latent_run, tmp_path, capsys):
    """ddpm sample and eval on the exported folder: a latent model again (its vqvae the codec, mean 0 and
    std 1 since the normalisation is folded in) drawing the run's own DDIM η = 0 samples."""
    out = tmp_path / "ldm"
    assert run_cli(capsys, "export", latent_run, out)[0] == 0
    options = {"sampler": "ddim", "steps": 4, "eta": 0.0, "eps_scale": 1.0, "spacing": "uniform"}
    expected = load(latent_run).sample(3, seed=2, **options)
    back = open_run(out, device="cpu").model  # what ddpm sample/eval open
    assert back.codec is not None and back.sample_shape == (1, 8, 8) and back.space_shape == (2, 4, 4)
    drawn = back.sample(3, seed=2, **options)
    assert expected.std() > 0.05 and (drawn - expected).abs().max() <= 1e-4
    samples = tmp_path / "s.npz"
    status, _, err = run_cli(capsys, "sample", out, "--n", 3, "--seed", 2, "--sampler", "ddim", "--eta", 0,
                             "--steps", 4, "--out", samples)  # fmt: skip
    assert status == 0, err
    levels = np.load(samples)["images"].astype(int) - to_uint8(expected).astype(int)
    assert np.abs(levels).max() <= 1 and (levels == 0).mean() > 0.95  # uint8 rounding of ≤ 1e-4 apart
    report = tmp_path / "eval.json"
    status, _, err = run_cli(capsys, "eval", out, "--data", "digits", "--n", 8, "--metrics", "fd",
                             "--steps", 4, "--json", report)  # fmt: skip
    assert status == 0, err
    scored = json.loads(report.read_text())
    assert (
        scored["sampler"] == "ddim" and scored["metrics"]["n"] == 8 and scored["metrics"]["fd_classifier"] > 0
    )


def test_an_autoencoder_run_exports_as_a_diffusers_autoencoder_kl(latent_run, tmp_path, capsys):
    """Weights as trained; the run's latent normalisation as latents_mean / latents_std (scaling_factor 1):
    given the same posterior noise, diffusers' encode and decode through them are our codec's."""
    autoencoder_run, out = latent_run.parent / "ae", tmp_path / "vae"
    status, printed, err = run_cli(capsys, "export", autoencoder_run, out)
    assert status == 0, err
    assert printed == str(out)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "diffusion_pytorch_model.safetensors"]
    codec = open_autoencoder(autoencoder_run)
    theirs = DiffusersAutoencoderKL.from_pretrained(out).eval()
    assert theirs.config.scaling_factor == 1.0
    mean = torch.tensor(theirs.config.latents_mean).view(1, -1, 1, 1)
    std = torch.tensor(theirs.config.latents_std).view(1, -1, 1, 1)
    assert torch.equal(mean, codec.mean) and torch.equal(std, codec.std)
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        z = theirs.encode(x).latent_dist.sample(generator=torch.Generator().manual_seed(1))
        noise = torch.randn(z.shape, generator=torch.Generator().manual_seed(1))
        torch.testing.assert_close((z - mean) / std, codec.encode(x, noise), rtol=0, atol=1e-5)
        z_norm = torch.randn(z.shape, generator=torch.Generator().manual_seed(2))
        decoded = theirs.decode(z_norm * std + mean).sample
        torch.testing.assert_close(decoded, codec.decode(z_norm), rtol=0, atol=1e-5)


def test_an_autoencoder_export_refuses_raw_weights_and_is_written_whole(latent_run, tmp_path, monkeypatch,
                                                                        capsys):  # fmt: skip
    autoencoder_run, out = latent_run.parent / "ae", tmp_path / "out"
    status, _, err = run_cli(capsys, "export", autoencoder_run, out, "--weights", "raw")
    assert status == 2 and len(err.splitlines()) == 1
    assert ("--weights 'raw' is not allowed for an autoencoder run: its latent normalisation was estimated "
            "with its EMA weights; export those (--weights ema)") in err  # fmt: skip
    assert list(tmp_path.iterdir()) == []
    out.mkdir()
    (out / "keep.txt").write_text("mine")

    def half_written(codec, folder):
        (folder / "config.json").write_text("{")
        raise OSError("No space left on device")

    monkeypatch.setattr(export_command, "export_codec", half_written)
    status, _, err = run_cli(capsys, "export", autoencoder_run, out, "--overwrite")
    assert status == 1 and err == "ddpm export: error: No space left on device"
    assert [p.name for p in out.iterdir()] == ["keep.txt"] and [p.name for p in tmp_path.iterdir()] == ["out"]


def test_a_control_run_is_refused_and_nothing_written(control_run, tmp_path, capsys):
    status, _, err = run_cli(capsys, "export", control_run, tmp_path / "out")
    assert status == 2 and len(err.splitlines()) == 1
    assert re.search(
        r"control.*: a ControlNet run cannot be exported to diffusers: its ControlNetModel pairs only with "
        r"UNet2DConditionModel, whose middle block cannot hold our U-Net's attention middle "
        r"\(diffusers issue 5861\), so the run directory \(safetensors \+ TOML\) is the format",
        err,
    )
    assert list(tmp_path.iterdir()) == []
