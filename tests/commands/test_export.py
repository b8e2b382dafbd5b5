"""`ddpm export RUN --format diffusers OUT_DIR`: a folder diffusers loads and runs, drawing our images;
written whole or not at all; refusals in one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from diffusers import DDIMPipeline, DDIMScheduler, DDPMPipeline

from ddpm.cli import main
from ddpm.commands import export as export_command
from ddpm.diffusion.samplers import sample_seeds
from ddpm.model import load, to_uint8

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
