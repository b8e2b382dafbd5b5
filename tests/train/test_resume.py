"""Stopping after k steps and resuming gives the same weights as an uninterrupted run (CPU)."""

import dataclasses
import json

import pytest
import torch

from ddpm.configio import ConfigError
from ddpm.rundir import RunDir
from ddpm.train.checkpoint import load_checkpoint
from ddpm.train.run import train


def _final_tensors(run_dir):
    checkpoint = load_checkpoint(RunDir(run_dir).latest_checkpoint())
    return checkpoint.step, checkpoint.model, checkpoint.ema, checkpoint.optimizer


def test_resume_continues_bit_for_bit(tmp_path, tiny_config):
    train(tiny_config, tmp_path / "whole", log=lambda *_: None)
    half = dataclasses.replace(tiny_config, run=dataclasses.replace(tiny_config.run, steps=3))
    train(half, tmp_path / "split", log=lambda *_: None)
    train(tiny_config, tmp_path / "split", resume=True, log=lambda *_: None)

    step_a, *whole = _final_tensors(tmp_path / "whole")
    step_b, *split = _final_tensors(tmp_path / "split")
    assert step_a == step_b == 6
    for tensors_a, tensors_b in zip(whole, split, strict=True):
        assert tensors_a.keys() == tensors_b.keys()
        for name in tensors_a:
            assert torch.equal(tensors_a[name], tensors_b[name]), name
    logged = [
        json.loads(line)["step"] for line in (tmp_path / "split" / "log.jsonl").read_text().splitlines()
    ]
    assert logged == [1, 2, 3, 4, 5, 6]


def test_resume_refuses_a_changed_config(tmp_path, tiny_config):
    train(tiny_config, tmp_path / "run", log=lambda *_: None)
    changed = dataclasses.replace(tiny_config, optim=dataclasses.replace(tiny_config.optim, lr=5e-4))
    with pytest.raises(
        ConfigError, match=r"config differs from the run being resumed in optim.lr; pass --force"
    ):
        train(changed, tmp_path / "run", resume=True, log=lambda *_: None)


def test_time_budget_stops_cleanly_with_a_checkpoint(tmp_path, tiny_config):
    config = dataclasses.replace(tiny_config, run=dataclasses.replace(tiny_config.run, time_budget_s=1e-9))
    result = train(config, tmp_path / "run", log=lambda *_: None)
    assert result.stopped_early and result.step == 1
    assert RunDir(tmp_path / "run").latest_checkpoint().name == "step_0000001"
    assert (tmp_path / "run" / "samples" / "final.png").is_file()
