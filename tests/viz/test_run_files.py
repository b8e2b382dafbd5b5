import numpy as np
import pytest
import torch
from PIL import Image

from ddpm.viz.figures import FIGURE_DPI
from ddpm.viz.run_files import load_run, load_samples_npz, save_run_curves


def test_load_run_reads_config_and_records(run_dir):
    run = load_run(run_dir)
    assert run.setting("schedule", None, ("diffusion",)) == "cosine"
    assert run.setting("steps", None, ("train", "run")) == 2000
    assert run.setting("missing", 7, ("diffusion",)) == 7
    assert len(run.log) == 100 and len(run.evals) == 4


def test_load_run_tolerates_missing_files(tmp_path):
    run = load_run(tmp_path)
    assert run.config == {} and run.log == [] and run.evals == []


def test_load_run_refuses_a_missing_directory_or_bad_toml(tmp_path):
    with pytest.raises(ValueError, match=r"run directory .* does not exist"):
        load_run(tmp_path / "nowhere")
    (tmp_path / "config.toml").write_text("[data\n")
    with pytest.raises(ValueError, match=r"config\.toml is not valid TOML"):
        load_run(tmp_path)


def test_samples_npz_images_and_points(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)
    np.savez(tmp_path / "images.npz", images=images)
    loaded = load_samples_npz(tmp_path / "images.npz")
    assert loaded.shape == (5, 3, 8, 8) and loaded.min() >= -1 and loaded.max() <= 1
    assert torch.equal(
        ((loaded + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1), torch.from_numpy(images)
    )
    np.savez(tmp_path / "gray.npz", images=images[..., 0])
    assert load_samples_npz(tmp_path / "gray.npz").shape == (5, 1, 8, 8)
    np.savez(tmp_path / "points.npz", points=np.ones((7, 2), np.float32))
    assert load_samples_npz(tmp_path / "points.npz").shape == (7, 2)
    np.savez(tmp_path / "other.npz", labels=np.ones(3))
    with pytest.raises(ValueError, match="holds neither 'images' nor 'points'"):
        load_samples_npz(tmp_path / "other.npz")


def test_save_run_curves_writes_each_picture(run_dir):
    paths = save_run_curves(run_dir)
    assert [p.name for p in paths] == ["curves.png", "eval.png", "schedule.png"]
    assert all(p.parent == run_dir / "figures" for p in paths)
    curves = np.asarray(Image.open(paths[0]))
    assert curves.shape[:2] == (7 * FIGURE_DPI, 10 * FIGURE_DPI) and curves.var() > 0
