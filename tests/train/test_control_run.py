"""``ddpm train --controlnet``: a run of its own over a frozen base (Zhang, Rao & Agrawala 2023) — it trains,
averages and checkpoints the branch alone, never writes the base, records the base by path and weights'
sha256, resumes bit for bit, and refuses a base or data that do not fit in one line, writing nothing."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
import torch

from ddpm.configio import ConfigError
from ddpm.nets.controlnet import ControlBranch, ControlNetConfig
from ddpm.nets.unet import UNet
from ddpm.rundir import CheckpointError, RunDir, weights_sha256
from ddpm.train.checkpoint import load_checkpoint
from ddpm.train.config import config_from_dict
from ddpm.train.control_data import ControlData, control_training_data
from ddpm.train.data_order import EpochOrder
from ddpm.train.presets import get_preset
from ddpm.train.run import train
from ddpm.train.run_data import load_data
from ddpm.train.step import draw_step
from tests.conftest import QUIET, control_run_config, tree_sha256


def test_a_control_run_leaves_its_base_run_unchanged(control_base, tmp_path):
    before = tree_sha256(control_base)
    train(control_run_config(control_base, "mask"), tmp_path / "run", **QUIET)
    assert tree_sha256(control_base) == before


def test_only_the_branch_is_checkpointed_and_the_base_is_recorded(control_run, control_base):
    config = config_from_dict(RunDir(control_run).config_dict())
    base_checkpoint = RunDir(control_base).latest_checkpoint()
    assert config.control.base == str(control_base.resolve())
    assert config.control.base_sha256 == weights_sha256(base_checkpoint)
    assert config.model == config_from_dict(RunDir(control_base).config_dict()).model  # the base's network
    checkpoint = load_checkpoint(RunDir(control_run).latest_checkpoint())
    branch = ControlBranch(config.model, ControlNetConfig())
    for state in (checkpoint.model, checkpoint.ema):
        assert state.keys() == branch.state_dict().keys()  # no base weights in the control run
    assert set(UNet(config.model).state_dict()) - set(checkpoint.model)  # the base has tensors of its own
    zero = checkpoint.model["middle_out.weight"]
    assert zero.abs().max() > 0  # the zero convolutions have learned


def test_a_control_run_resumes_bit_for_bit(control_base, tmp_path):
    train(control_run_config(control_base, "canny", 4), tmp_path / "whole", **QUIET)
    train(control_run_config(control_base, "canny", 2), tmp_path / "split", **QUIET)
    train(control_run_config(control_base, "canny", 4), tmp_path / "split", resume=True, **QUIET)
    whole = load_checkpoint(RunDir(tmp_path / "whole").latest_checkpoint())
    split = load_checkpoint(RunDir(tmp_path / "split").latest_checkpoint())
    assert whole.step == split.step == 4
    for a, b in ((whole.model, split.model), (whole.ema, split.ema), (whole.optimizer, split.optimizer)):
        assert a.keys() == b.keys()
        assert all(torch.equal(a[name], b[name]) for name in a)


def test_training_draws_blanks_controls_at_the_drop_rate_and_flips_them_with_the_images(control_base):
    config = control_run_config(control_base, "mask", 1, "control.drop_rate=0.5", "data.random_flip=true")
    data, config = control_training_data(config, load_data(config), **QUIET)
    order = EpochOrder(len(data), 512, 0)
    config = dataclasses.replace(config, run=dataclasses.replace(config.run, batch_size=512))
    draws = draw_step(config, order, 0, data, 1000, torch.device("cpu"))
    assert 0.4 < draws.drop_control.float().mean() < 0.6
    control = data.control_batch(draws.index, flip=draws.flip, blank=draws.drop_control)
    images = data.batch(draws.index)
    images = torch.where(draws.flip[:, None, None, None], images.flip(-1), images)
    kept = ~draws.drop_control
    assert torch.equal(control[kept], torch.where(images[kept] > 0, 1.0, -1.0))  # the mask of its own image
    assert (control[draws.drop_control] == -1).all()


def test_plain_runs_draw_what_they_always_drew(tiny_config):
    dataset = load_data(tiny_config)
    draws = draw_step(tiny_config, EpochOrder(len(dataset), 16, 0), 3, dataset, 1000, torch.device("cpu"))
    assert draws.drop_control is None


def test_a_base_whose_weights_changed_is_refused_on_resume(control_base, tmp_path):
    base = tmp_path / "base"
    shutil.copytree(control_base, base)
    train(control_run_config(base, "canny", 2), tmp_path / "run", **QUIET)
    config = config_from_dict(RunDir(base).config_dict())  # train the base on: its old checkpoints go
    train(dataclasses.replace(config, run=dataclasses.replace(config.run, steps=12, keep_last=1)), base,
          resume=True, **QUIET)  # fmt: skip
    before = tree_sha256(tmp_path / "run")
    stored = config_from_dict(RunDir(tmp_path / "run").config_dict())  # as ddpm train --resume reads it
    with pytest.raises(CheckpointError, match=r"base run .* has changed: none of its checkpoints holds the"):
        train(stored, tmp_path / "run", resume=True, **QUIET)
    assert tree_sha256(tmp_path / "run") == before


def _mlp_run(tmp_path):
    config = get_preset("swissroll")
    config = dataclasses.replace(config, run=dataclasses.replace(config.run, steps=2, sample_every=0,
                                 preview_images=4, preview_steps=2, log_every=1))  # fmt: skip
    train(config, tmp_path / "points", **QUIET)
    return tmp_path / "points"


def _latent_run(control_base, tmp_path):
    """A copy of the base whose config says it is a latent diffusion run."""
    fake = tmp_path / "latent"
    shutil.copytree(control_base, fake)
    with (fake / "config.toml").open("a") as f:
        f.write('\n[latent]\nautoencoder = "/somewhere/ae"\n')
    return fake


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing base", r"base run '.*nowhere' does not exist \(moved or deleted\?\)"),
        ("points base", r"is a run of model\.kind = 'mlp'; a ControlNet steers a U-Net diffusion model"),
        ("latent base", r"is a latent diffusion run; ControlNet runs on latents are not supported yet"),
        ("control base", r"is itself a ControlNet run; give the run it steers"),
        ("unknown kind", r"--control 'blur': control\.kind='blur' is not allowed; choose one of canny, mask"),
        ("gray of gray images", r"control 'gray' does not apply to data 'digits'"),
        ("no labels", r"data 'digits' gives no classes; the base run .* has 10"),
        ("other network", r"model table differs from the base run's"),
        ("other schedule", r"diffusion\.schedule differs from the base run's"),
    ],
)
def test_bad_control_runs_are_refused_in_one_line_and_write_nothing(case, message, control_base, control_run,
                                                                   tmp_path):  # fmt: skip
    base, control, sets = control_base, "canny", []
    if case == "missing base":
        base = tmp_path / "nowhere"
    elif case == "points base":
        base = _mlp_run(tmp_path)
    elif case == "latent base":
        base = _latent_run(control_base, tmp_path)
    elif case == "control base":
        base = control_run
    elif case == "unknown kind":
        control = "blur"
    elif case == "gray of gray images":
        control = "gray"
    else:
        sets = {"no labels": ["data.class_conditional=false"], "other network": ["model.base_channels=32"],
                "other schedule": ["diffusion.schedule=cosine"]}[case]  # fmt: skip
    out = tmp_path / "out"
    with pytest.raises((CheckpointError, ConfigError, ValueError), match=message) as error:
        train(control_run_config(base, control, 2, *sets), out, **QUIET)
    assert "\n" not in str(error.value)
    assert not out.exists()


def test_control_data_fingerprint_covers_the_controls(control_base):
    config = control_run_config(control_base, "canny", 1)
    canny, _ = control_training_data(config, load_data(config), **QUIET)
    config = control_run_config(control_base, "mask", 1)
    mask, _ = control_training_data(config, load_data(config), **QUIET)
    assert isinstance(canny, ControlData) and canny.fingerprint != mask.fingerprint
    assert canny.controls.dtype == torch.uint8 and set(canny.controls.unique().tolist()) <= {0, 255}
    assert json.dumps(canny.images.fingerprint) != json.dumps(canny.fingerprint)
