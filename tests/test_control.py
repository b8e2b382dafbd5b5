"""The model object of a ControlNet run (Zhang, Rao & Agrawala 2023): ``ddpm.load`` rebuilds the frozen base
from its own run (refusing a base that moved or changed), loads the branch, and the one sampling path passes
each sample its control: at initialisation, with scale 0 or without a control it is the base bit for bit."""

from __future__ import annotations

import shutil

import pytest
import torch

import ddpm
from ddpm.model import build_model
from ddpm.rundir import CheckpointError
from ddpm.train.run import train
from tests.conftest import QUIET, control_run_config

STEPS = {"sampler": "ddim", "steps": 5}


def controls(n: int, seed: int = 3) -> torch.Tensor:
    return torch.where(torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed)) > 0.7, 1.0, -1.0)


def noise(n: int) -> torch.Tensor:
    return torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(1))


def test_load_rebuilds_the_base_and_the_trained_branch(control_run, control_base):
    model, base = ddpm.load(control_run), ddpm.load(control_base)
    assert model.spec.control is not None and model.spec.control.kind == "canny"
    for name, tensor in base.net.state_dict().items():
        assert torch.equal(model.net.base.state_dict()[name], tensor), name
    assert model.net.branch.middle_out.weight.abs().max() > 0  # trained weights, not a fresh copy


@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_at_initialisation_controlled_samples_are_the_base_bit_for_bit(control_run, control_base, guidance):
    fresh = build_model(ddpm.load(control_run).spec)  # the control run's model before any training
    base = ddpm.load(control_base)
    options = {"noise": noise(6), "labels": [0, 1, 2, 3, 4, 5], "guidance": guidance, **STEPS}
    assert torch.equal(fresh.sample(control=controls(6), **options), base.sample(**options))


def test_scale_zero_and_no_control_are_the_base_and_a_control_steers_after_training(
    control_run, control_base
):
    model, base = ddpm.load(control_run), ddpm.load(control_base)
    options = {"noise": noise(4), "labels": 7, "guidance": 2.0, **STEPS}
    expected = base.sample(**options)
    assert torch.equal(model.sample(**options), expected)
    assert torch.equal(model.sample(control=controls(4), control_scale=0.0, **options), expected)
    steered = model.sample(control=controls(4), **options)
    assert not torch.equal(steered, expected)
    assert not torch.equal(steered, model.sample(control=controls(4, seed=9), **options))


def test_each_sample_gets_its_own_control_whatever_the_batch_size(control_run):
    model = ddpm.load(control_run)
    options = {"n": 5, "control": controls(5), "labels": [1, 2, 3, 4, 5], "seed": 4, **STEPS}
    # the same up to float rounding of batched convolutions; a control given to the wrong row is far off
    torch.testing.assert_close(model.sample(batch_size=2, **options), model.sample(batch_size=5, **options))


@pytest.mark.parametrize(
    "change, message",
    [
        (
            {"control": torch.zeros(3, 1, 8, 8)},
            r"control of shape \(3, 1, 8, 8\) does not fit; .* \(4, 1, 8, 8\)",
        ),
        ({"control": torch.zeros(4, 3, 8, 8)}, r"control of shape \(4, 3, 8, 8\) does not fit"),
        ({"control": torch.zeros(4, 1, 16, 16)}, r"control of shape \(4, 1, 16, 16\) does not fit"),
        ({"control": torch.zeros(4, 1, 8, 8, dtype=torch.uint8)}, r"does not fit; this model needs float"),
        ({"control": torch.full((4, 1, 8, 8), float("nan"))}, r"control holds NaN or infinite values"),
        (
            {"control": torch.zeros(4, 1, 8, 8), "control_scale": float("inf")},
            r"control_scale inf is invalid",
        ),
    ],
)
def test_bad_controls_are_refused_in_one_line(control_run, change, message):
    with pytest.raises(ValueError, match=message) as error:
        ddpm.load(control_run).sample(4, **STEPS, **change)
    assert "\n" not in str(error.value)


def test_a_control_given_to_a_plain_model_is_refused(control_base):
    with pytest.raises(ValueError, match=r"control given to a model without a ControlNet branch"):
        ddpm.load(control_base).sample(2, control=controls(2), **STEPS)


def test_load_refuses_a_base_that_moved(control_base, tmp_path):
    base = tmp_path / "base"
    shutil.copytree(control_base, base)
    train(control_run_config(base, "mask", 2), tmp_path / "run", **QUIET)
    ddpm.load(tmp_path / "run")
    shutil.move(base, tmp_path / "elsewhere")
    with pytest.raises(CheckpointError, match=r"base run '.*base' does not exist \(moved or deleted\?\)"):
        ddpm.load(tmp_path / "run")
