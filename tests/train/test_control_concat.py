"""Concat control runs, ControlNet's honest baseline (issue 21): ``ddpm train --data SPEC --control KIND``
without ``--controlnet`` trains a U-Net from scratch whose input is [x_t, control], on the controls a
ControlNet run computes, dropped at the same rate to the same blank control; it records itself as
``[control] mode = "concat"``, resumes bit for bit, and refuses what it cannot train in one line, writing
nothing."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

import ddpm
from ddpm.configio import ConfigError
from ddpm.control import ControlConfig
from ddpm.nets.concat_control import BLANK, ConcatControlUNet
from ddpm.rundir import CheckpointError, RunDir
from ddpm.train.checkpoint import load_checkpoint
from ddpm.train.config import config_from_dict
from ddpm.train.config_layers import build_train_config
from ddpm.train.control_config import concat_flags, control_layers, control_run_dir
from ddpm.train.control_data import ControlData, control_training_data
from ddpm.train.data_order import EpochOrder
from ddpm.train.distributed import DistContext, batch_plan
from ddpm.train.objective import build_objective
from ddpm.train.run import train
from ddpm.train.run_data import load_data
from ddpm.train.step import accumulate_gradients, draw_step
from tests.conftest import QUIET, TINY_SETS, concat_run_config
from tests.nets.test_unet import perturbed
from tests.train.test_control_folder import write_pairs

BATCH = 256
CONCAT = concat_flags(None, "mask")


class ControlSpy(nn.Module):
    """The network as the loss calls it, recording the controls it is given."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net, self.controls = net, []

    def forward(self, x, t, class_labels=None, **cond):
        self.controls.append(cond["control"])
        return self.net(x, t, class_labels, **cond)


def step_loss(config, data, net: nn.Module) -> tuple[float, torch.Tensor]:
    """Step 0's loss over a global batch of BATCH, and its draws (Algorithm 1 as the loop computes it)."""
    config = dataclasses.replace(config, run=dataclasses.replace(config.run, batch_size=BATCH))
    draws = draw_step(config, EpochOrder(len(data), BATCH, 0), 0, data, 1000, torch.device("cpu"))
    loss_fn = build_objective(config, data).loss_fn
    plan, ctx = batch_plan(BATCH, 1), DistContext()
    loss = accumulate_gradients(net, loss_fn, data, draws, config, 0, plan, ctx, "fp32")
    return float(loss), draws


@pytest.fixture(scope="module")
def concat_data():
    config = concat_run_config("mask", 1, "control.drop_rate=0.5")
    data, config = control_training_data(config, load_data(config), **QUIET)
    return data, config


def fresh_net(config) -> ConcatControlUNet:
    torch.manual_seed(0)
    return perturbed(ConcatControlUNet(config.model, config.control.control_channels))


def test_the_run_records_its_mode_and_its_network_reads_image_and_control_channels(concat_run):
    config = config_from_dict(RunDir(concat_run).config_dict())
    assert (config.control.mode, config.control.kind, config.control.base) == ("concat", "mask", "")
    assert (config.model.in_channels, config.control.control_channels) == (1, 1)  # the images' channels
    assert config.model.num_classes == 10  # class conditioning combines with the control
    model = ddpm.load(concat_run)
    assert isinstance(model.net, ConcatControlUNet) and model.spec.control == config.control
    assert model.net.conv_in.in_channels == 2 and model.net.conv_out.out_channels == 1
    checkpoint = load_checkpoint(RunDir(concat_run).latest_checkpoint())
    assert checkpoint.model["conv_in.weight"].shape[1] == 2  # every weight trained: a whole U-Net, no base
    assert checkpoint.model.keys() == model.net.state_dict().keys()


def test_training_reads_the_control(concat_data):
    data, config = concat_data
    config = dataclasses.replace(config, control=dataclasses.replace(config.control, drop_rate=0.0))
    data = dataclasses.replace(data, drop_rate=0.0)
    net = fresh_net(config)
    loss, _ = step_loss(config, data, net)
    assert step_loss(config, data, net)[0] == loss  # the same draws, the same loss
    inverted = dataclasses.replace(data, controls=255 - data.controls)
    assert abs(step_loss(config, inverted, net)[0] - loss) > 1e-4


def test_controls_are_dropped_to_the_blank_control_at_the_drop_rate(concat_data):
    data, config = concat_data
    spy = ControlSpy(fresh_net(config))
    _, draws = step_loss(config, data, spy)
    (control,) = spy.controls
    assert 0.4 < draws.drop_control.float().mean() < 0.6  # control.drop_rate = 0.5
    dropped = draws.drop_control
    assert (control[dropped] == BLANK).all()
    images = data.batch(draws.index)
    assert torch.equal(control[~dropped], torch.where(images[~dropped] > 0, 1.0, -1.0))  # each image's mask


def test_a_concat_run_resumes_bit_for_bit(tmp_path):
    train(concat_run_config("canny", 4), tmp_path / "whole", **QUIET)
    train(concat_run_config("canny", 2), tmp_path / "split", **QUIET)
    train(concat_run_config("canny", 4), tmp_path / "split", resume=True, **QUIET)
    whole = load_checkpoint(RunDir(tmp_path / "whole").latest_checkpoint())
    split = load_checkpoint(RunDir(tmp_path / "split").latest_checkpoint())
    assert whole.step == split.step == 4
    for a, b in ((whole.model, split.model), (whole.ema, split.ema)):
        assert all(torch.equal(a[name], b[name]) for name in a)


def test_concat_flags_and_run_dirs():
    flags = {"control.mode": "concat", "control.kind": "canny", "control.folder": ""}
    assert concat_flags(None, "canny") == flags
    assert concat_flags("runs/base", "canny") == {} and concat_flags(None, None) == {}
    assert control_run_dir(None, "mask", "mnist:/data") == "runs/mnist-concat-mask"
    assert control_run_dir("runs/base", "mask") == "runs/base-mask"


@pytest.mark.parametrize(
    "flags, sets, message",
    [
        ({"control.mode": "blend"}, (), r"control\.mode='blend' is not allowed; choose one of controlnet"),
        (CONCAT, ("control.base=runs/x",), r"control\.base names a ControlNet's frozen base"),
        (CONCAT, ("control.drop_rate=1.0",), r"control\.drop_rate=1\.0 must be in \[0, 1\)"),
    ],
)
def test_bad_concat_configs_are_refused_in_one_line(flags, sets, message):
    with pytest.raises(ConfigError, match=message) as error:
        build_train_config("digits", overrides=sets, flags=flags)
    assert "\n" not in str(error.value)


def test_points_data_and_a_concat_base_are_refused_in_one_line_writing_nothing(concat_run, tmp_path):
    with pytest.raises(ConfigError, match=r"a control run .* needs a U-Net of images; set model\.kind"):
        train(build_train_config("swissroll", flags=concat_flags(None, "mask")), tmp_path / "points", **QUIET)
    with pytest.raises(CheckpointError, match=r"is a concat control run \(its input holds its control\)"):
        control_layers(str(concat_run), "canny", None)
    with pytest.raises(ValueError, match=r"control\.base names a ControlNet's frozen base"):
        ControlConfig(mode="concat", base_sha256="ab")
    assert not (tmp_path / "points").exists()


def test_the_data_is_control_data_with_the_controlnets_drop_rate(concat_data):
    data, config = concat_data
    assert isinstance(data, ControlData) and data.drop_rate == config.control.drop_rate == 0.5
    assert data.controls.shape == (len(data), 1, 8, 8) and data.controls.dtype == torch.uint8


def test_users_own_controls_train_a_concat_run(tmp_path, monkeypatch):
    images = write_pairs(tmp_path)
    monkeypatch.chdir(tmp_path)  # a relative control folder is recorded as an absolute path
    sets = [*TINY_SETS, "run.steps=2", "data.image_size=8", "data.channels=1", "data.random_flip=false"]
    config = build_train_config("folder:data", overrides=sets, flags=concat_flags(None, "folder:controls"))
    train(config, tmp_path / "run", **QUIET)
    stored = config_from_dict(RunDir(tmp_path / "run").config_dict())
    assert (stored.control.mode, stored.control.folder) == ("concat", str(tmp_path / "controls"))
    data, _ = control_training_data(stored, load_data(stored), **QUIET)
    masks = torch.stack(
        [torch.from_numpy((images[name.removesuffix(".png")] > 127) * 255) for name in data.images.names]
    )
    assert torch.equal(data.controls[:, 0], masks.to(torch.uint8))  # each image's own mask, paired by name
