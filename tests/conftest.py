"""Session fixtures shared across test folders: a tiny class-conditional digits base run and a ControlNet run
steering it (Zhang, Rao & Agrawala 2023), and a concat control run (its baseline), each a few steps, so the
control tests take seconds."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import pytest

from ddpm.train.config import TrainConfig
from ddpm.train.config_layers import build_train_config
from ddpm.train.control_config import concat_flags, control_layers
from ddpm.train.run import train
from tests.train.conftest import tiny_digits_config

QUIET = {"log": lambda *_: None}


def control_run_config(base: Path, control: str = "canny", steps: int = 4, *overrides: str) -> TrainConfig:
    """``ddpm train --controlnet BASE --control CONTROL`` of ``steps`` steps, checkpoints every 2, no warm-up
    (so a few steps move the branch visibly)."""
    sets = [f"run.steps={steps}", "run.checkpoint_every=2", "run.sample_every=0", "run.log_every=1",
            "run.preview_images=4", "run.preview_steps=5", "optim.warmup_steps=0", *overrides]  # fmt: skip
    return build_train_config("digits", base_layers=control_layers(str(base), control, None), overrides=sets)


# tiny_digits_config's network and run as --set values, for configs built from their layers
TINY_SETS = (
    "model.base_channels=16", "model.channel_mult=[1, 2]", "model.num_res_blocks=1", "model.num_groups=8",
    "model.attention_resolutions=[4]", "model.dropout=0.1", "run.batch_size=16", "run.log_every=1",
    "run.sample_every=0", "run.checkpoint_every=2", "run.preview_images=4", "run.preview_steps=5",
)  # fmt: skip


def concat_run_config(control: str = "mask", steps: int = 4, *overrides: str) -> TrainConfig:
    """``ddpm train --data digits --control CONTROL`` (a concat run) of ``steps`` steps with a tiny network,
    class-conditional, checkpoints every 2, no warm-up."""
    sets = [*TINY_SETS, f"run.steps={steps}", "data.class_conditional=true", "optim.warmup_steps=0"]
    return build_train_config("digits", overrides=[*sets, *overrides], flags=concat_flags(None, control))


def tree_sha256(folder: Path) -> str:
    """sha256 over every file below ``folder``: relative names and contents."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="session")
def control_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 6-step class-conditional digits run for ControlNet runs to steer."""
    config = tiny_digits_config()
    config = dataclasses.replace(config, data=dataclasses.replace(config.data, class_conditional=True))
    run_dir = tmp_path_factory.mktemp("control-base") / "base"
    train(config, run_dir, **QUIET)
    return run_dir


@pytest.fixture(scope="session")
def control_run(control_base: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4-step canny ControlNet run on ``control_base``."""
    run_dir = tmp_path_factory.mktemp("control") / "run"
    train(control_run_config(control_base), run_dir, **QUIET)
    return run_dir


@pytest.fixture(scope="session")
def concat_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4-step class-conditional mask concat run (the U-Net from scratch on [x_t, control])."""
    run_dir = tmp_path_factory.mktemp("concat") / "run"
    train(concat_run_config(), run_dir, **QUIET)
    return run_dir
