"""The default recipe of cifar10 and folder data (issue 20): the paper's GPU recipe on CUDA, on a CPU the
cifar10-cpu preset under 64 px and two latent stages from 64 px, sized to the images; an explicit preset
and every other data set are untouched."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ddpm.cli import main
from ddpm.nets import AutoencoderConfig, UNetConfig
from ddpm.rundir import RunDir
from ddpm.train.config_layers import build_train_config, recipe_inputs
from ddpm.train.presets import get_preset
from ddpm.train.recipes import Recipe, choose_recipe, recipe_config, recipe_line
from ddpm.train.run import train


def image_folder(root: Path, size: int, count: int = 4, suffix: str = ".png") -> Path:
    """``count`` random RGB images of ``size``×``size`` px in ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(size)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(root / f"{i}{suffix}")
    return root


@pytest.mark.parametrize(
    ("spec", "device", "size", "space", "trained"),
    [
        ("cifar10", "cpu", 32, "pixel", 0),  # CIFAR-10's own 32 px
        ("cifar10", "cuda", 32, "gpu", 0),
        ("cifar10:/data/c", "cuda:1", 32, "gpu", 0),
        ("folder:x", "cpu", 32, "pixel", 32),
        ("folder:x", "cpu", 48, "pixel", 48),
        ("folder:x", "cpu", 63, "pixel", 60),  # a multiple of 4: three U-Net levels
        ("folder:x", "cpu", 64, "latent", 64),
        ("folder:x", "cpu", 100, "latent", 96),  # a multiple of 16: f=8, then one halving of the latents
        ("folder:x", "cpu", 500, "latent", 128),  # at most 128 px on a CPU
        ("folder:x", "cuda", 64, "gpu", 0),  # the data set's own preset, at the folder default (32 px)
    ],
)  # fmt: skip
def test_the_device_and_the_image_size_choose_the_recipe(spec, device, size, space, trained):
    recipe = choose_recipe(spec, device, size)
    assert (recipe.device, recipe.space, recipe.image_size) == (device[:4], space, trained)
    assert recipe.two_stage == (space == "latent")


def test_other_data_sets_and_auto_without_a_gpu():
    for spec in ("digits", "mnist", "fashion-mnist:/x", "swissroll"):
        assert choose_recipe(spec, "cpu", 28) is None
    assert choose_recipe("folder:x", "auto", 32).device == "cpu"  # no GPU on this machine
    assert choose_recipe("folder:x", "cpu", 96, requested_size=40) == Recipe("cpu", "pixel", 40, 96)
    assert choose_recipe("folder:x", "cpu", 32, requested_size=64).space == "latent"


def test_a_cpu_trains_cifar10_with_cifar10_cpu_and_a_gpu_with_the_papers_recipe():
    cpu = build_train_config("cifar10", flags={"run.device": "cpu"})
    assert cpu.model == get_preset("cifar10-cpu").model and cpu.run.steps == 1860
    assert cpu.data.image_size == 0 and cpu.data.random_flip
    gpu = build_train_config("cifar10", overrides=["run.device=cuda"])
    assert gpu.model == get_preset("cifar10").model and gpu.run.steps == 800_000
    named = build_train_config("cifar10", preset="cifar10", flags={"run.device": "cpu"})
    assert named.model == get_preset("cifar10").model  # an explicit preset always wins
    assert build_train_config("mnist", flags={"run.device": "cpu"}).model == get_preset("mnist").model


def test_the_cifar10_cpu_preset_is_the_issues_recipe():
    config = get_preset("cifar10-cpu")
    assert config.model == UNetConfig(
        in_channels=3, image_size=32, base_channels=32, channel_mult=(1, 2, 2), num_res_blocks=1,
        attention_resolutions=(8,), dropout=0.0, num_groups=8,
    )  # fmt: skip
    assert (config.optim.lr, config.optim.warmup_steps, config.optim.ema_decay) == (1e-3, 200, 0.999)
    run = config.run
    assert (run.steps, run.batch_size, run.sample_every, run.checkpoint_every) == (1860, 64, 500, 500)
    assert (run.preview_images, run.preview_sampler, run.preview_steps) == (64, "dpm++2m_sde", 20)
    assert config.diffusion.schedule == "linear" and config.diffusion.num_steps == 1000


def test_a_folder_of_48_px_images_trains_at_48_px_with_attention_at_its_third_level(tmp_path):
    folder = image_folder(tmp_path / "photos", 48, suffix=".jpg")
    config = build_train_config(
        f"folder:{folder}", flags={"run.device": "cpu", "run.steps": 1, "run.batch_size": 2},
        overrides=["run.preview_images=2", "run.preview_steps=2"],
    )  # fmt: skip
    assert config.data.image_size == 48 and config.model.attention_resolutions == (12,)
    train(config, tmp_path / "run", log=lambda *_: None)
    stored = RunDir(tmp_path / "run").config_dict()
    assert stored["model"]["image_size"] == 48 and stored["data"]["image_size"] == 48
    asked = build_train_config(f"folder:{folder}", overrides=["run.device=cpu", "data.image_size=32"])
    assert asked.data.image_size == 32 and asked.model.attention_resolutions == (8,)
    gpu = build_train_config(f"folder:{folder}", flags={"run.device": "cuda"})
    assert gpu.data.image_size == 0 and gpu.model == get_preset("cifar10").model  # as before issue 20


def test_the_stages_of_a_64_px_folder_get_an_f8_autoencoder_and_a_u_net_for_its_8x8_latents(tmp_path):
    folder = image_folder(tmp_path / "photos", 64, count=1)
    first = build_train_config(f"folder:{folder}", kind="autoencoder", flags={"run.device": "cpu"})
    assert isinstance(first.model, AutoencoderConfig) and first.model.downsample_factor == 8
    assert first.data.image_size == 64 and first.model.latent_shape == (4, 8, 8)
    second = build_train_config(f"folder:{folder}", kind="latent", flags={"run.device": "cpu"})
    assert second.model.image_size == 8 and second.model.channel_mult == (1, 2)
    assert second.data.image_size == 64
    at_128 = recipe_config(choose_recipe("folder:x", "cpu", 128), "folder:x", "latent")
    assert at_128.model.image_size == 16 and at_128.model.channel_mult == (1, 2, 2)


def test_the_layers_above_the_preset_name_the_device_and_the_size(tmp_path):
    (tmp_path / "c.toml").write_text('[run]\ndevice = "cuda"\n[data]\nimage_size = 40\n')
    assert recipe_inputs(tmp_path / "c.toml") == ("cuda", 40)
    assert recipe_inputs(tmp_path / "c.toml", ["run.device=cpu"], {"data.image_size": 24}) == ("cpu", 24)
    assert recipe_inputs(None, ["data.image_size=big", "run.device=1"]) == ("auto", 0)  # refused later


def test_the_recipe_says_in_one_line_what_it_chose_and_how_to_get_the_other():
    assert recipe_line(Recipe("cpu", "pixel", 48, 48), ("1860 steps",)) == (
        "CPU recipe for 48 px images: pixel diffusion, preset cifar10-cpu (1860 steps); "
        "--preset cifar10 for the paper's GPU recipe"
    )
    assert recipe_line(Recipe("cpu", "latent", 128, 500), ("6 min", "24 min")) == (
        "CPU recipe for 500 px images (resized to 128 px; --set data.image_size=N for another size): "
        "autoencoder f=8 (6 min) then latent diffusion (24 min); --preset cifar10 for the paper's GPU recipe"
    )
    assert recipe_line(Recipe("cuda", "gpu", 0), ()).startswith("GPU recipe: preset cifar10 (the paper's")


@pytest.mark.parametrize(
    ("make", "sets", "message"),
    [
        (lambda root: root / "nowhere", [], r"data path '.*nowhere' in spec .* does not exist$"),
        (lambda root: root / "empty", [], r"folder .*empty has no images; looked for \.png"),
        (lambda root: image_folder(root / "odd", 64, 1), ["--set", "data.image_size=100"],
         r"image_size 100 cannot be halved 3 times: it must be divisible by the downsample factor 8"),
    ],
)  # fmt: skip
def test_bad_folders_and_sizes_are_refused_in_one_line_before_anything_is_written(
    tmp_path, capsys, make, sets, message
):
    folder, out = make(tmp_path), tmp_path / "run"
    (tmp_path / "empty").mkdir()
    status = main(["train", "--data", f"folder:{folder}", "--device", "cpu", "--out", str(out), *sets])
    err = capsys.readouterr().err.strip()
    assert status == 2 and len(err.splitlines()) == 1 and re.search(message, err), err
    assert not out.exists()
