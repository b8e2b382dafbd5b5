"""Stopping after k steps and resuming gives the same weights as an uninterrupted run (CPU)."""

import dataclasses
import hashlib
import json

import pytest
import torch

from ddpm.configio import ConfigError
from ddpm.rundir import MANIFEST, META, RunDir, manifest_bytes
from ddpm.train.checkpoint import load_checkpoint
from ddpm.train.run import train


def _final_tensors(run_dir):
    checkpoint = load_checkpoint(RunDir(run_dir).latest_checkpoint())
    return checkpoint.step, checkpoint.model, checkpoint.ema, checkpoint.optimizer


def test_resume_continues_bit_for_bit(tmp_path, tiny_config):
    train(tiny_config, tmp_path / "whole", log=lambda *_: None)
    half = dataclasses.replace(tiny_config, run=dataclasses.replace(tiny_config.run, steps=3))
    train(half, tmp_path / "split", log=lambda *_: None)
    first_piece_s = load_checkpoint(RunDir(tmp_path / "split").latest_checkpoint()).meta["train_time_s"]
    train(tiny_config, tmp_path / "split", resume=True, log=lambda *_: None)

    step_a, *whole = _final_tensors(tmp_path / "whole")
    step_b, *split = _final_tensors(tmp_path / "split")
    assert step_a == step_b == 6
    for tensors_a, tensors_b in zip(whole, split, strict=True):
        assert tensors_a.keys() == tensors_b.keys()
        for name in tensors_a:
            assert torch.equal(tensors_a[name], tensors_b[name]), name
    logged = [json.loads(line) for line in (tmp_path / "split" / "log.jsonl").read_text().splitlines()]
    assert [record["step"] for record in logged] == [1, 2, 3, 4, 5, 6]
    assert logged[2]["time_s"] <= first_piece_s < logged[3]["time_s"]
    times = [record["time_s"] for record in logged]
    assert times == sorted(times) and times[3] > times[2]  # the resumed piece goes on from the first's time


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


def _set_train_time(checkpoint, seconds):
    """Rewrite a checkpoint's recorded training time (None: drop it, as checkpoints before it was kept)."""
    meta = json.loads((checkpoint / META).read_text())
    meta.pop("train_time_s")
    data = json.dumps(meta if seconds is None else {**meta, "train_time_s": seconds}, indent=1).encode()
    (checkpoint / META).write_bytes(data)
    manifest = {**json.loads((checkpoint / MANIFEST).read_text()), META: hashlib.sha256(data).hexdigest()}
    (checkpoint / MANIFEST).write_bytes(manifest_bytes(manifest))


@pytest.mark.parametrize("earlier_s", [1e6, None])
def test_a_resumed_run_counts_time_from_its_checkpoint_and_budgets_only_the_new_piece(
    tmp_path, tiny_config, earlier_s
):
    half = dataclasses.replace(tiny_config, run=dataclasses.replace(tiny_config.run, steps=3))
    train(half, tmp_path / "run", log=lambda *_: None)
    _set_train_time(RunDir(tmp_path / "run").latest_checkpoint(), earlier_s)
    # --time on a resume is this much more time: a run that already took 1e6 s still trains its 3 steps
    rest = dataclasses.replace(tiny_config, run=dataclasses.replace(tiny_config.run, time_budget_s=3600))
    result = train(rest, tmp_path / "run", resume=True, log=lambda *_: None)
    assert result.step == 6 and not result.stopped_early
    resumed = [
        json.loads(line)["time_s"] for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()
    ]
    start = earlier_s or 0.0  # a checkpoint without train_time_s starts from 0
    assert all(start < seconds <= start + result.seconds for seconds in resumed[3:])
    final = load_checkpoint(RunDir(tmp_path / "run").latest_checkpoint()).meta["train_time_s"]
    assert resumed[-1] <= final <= start + result.seconds
