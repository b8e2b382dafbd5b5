"""Resuming is refused on changed data or config unless forced; damage is skipped and reported."""

import dataclasses
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from ddpm.configio import ConfigError
from ddpm.rundir import RunDir
from ddpm.train.run import train


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _png(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (8, 8), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def _folder_config(tiny_config, folder, steps=2):
    data = dataclasses.replace(tiny_config.data, spec=f"folder:{folder}", image_size=8, channels=1)
    run = dataclasses.replace(tiny_config.run, steps=steps, checkpoint_every=1, num_threads=1, batch_size=4)
    return dataclasses.replace(tiny_config, data=data, run=run)


def test_resume_refuses_changed_data_unless_forced(tmp_path, tiny_config):
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(4):
        (folder / f"{i}.png").write_bytes(_png(i))
    train(_folder_config(tiny_config, folder), tmp_path / "run", log=lambda *_: None)
    (folder / "4.png").write_bytes(_png(4))  # the data set changes under the run
    longer = _folder_config(tiny_config, folder, steps=3)
    with pytest.raises(
        ConfigError, match=r"data 'folder:.*images' has changed since .*step_0000002 was written"
    ):
        train(longer, tmp_path / "run", resume=True, log=lambda *_: None)
    assert RunDir(tmp_path / "run").latest_checkpoint().name == "step_0000002"  # nothing was touched
    result = train(longer, tmp_path / "run", resume=True, force=True, log=lambda *_: None)
    assert result.step == 3


def test_resume_with_a_changed_config_is_allowed_when_forced(tmp_path, tiny_config):
    config = dataclasses.replace(
        tiny_config, run=dataclasses.replace(tiny_config.run, steps=2, num_threads=1)
    )
    train(config, tmp_path / "run", log=lambda *_: None)
    changed = dataclasses.replace(
        config, optim=dataclasses.replace(config.optim, lr=5e-4), run=dataclasses.replace(config.run, steps=3)
    )
    with pytest.raises(ConfigError, match=r"config differs from the run being resumed in optim.lr"):
        train(changed, tmp_path / "run", resume=True, log=lambda *_: None)
    assert train(changed, tmp_path / "run", resume=True, force=True, log=lambda *_: None).step == 3
    relaxed = dataclasses.replace(changed, optim=dataclasses.replace(changed.optim, max_bad_steps=5))
    train(relaxed, tmp_path / "run", resume=True, force=True, log=lambda *_: None)
    stricter = dataclasses.replace(relaxed, optim=dataclasses.replace(relaxed.optim, max_bad_steps=7))
    train(stricter, tmp_path / "run", resume=True, log=lambda *_: None)  # a run-control key: no --force


def test_resume_skips_a_damaged_newest_checkpoint_and_a_torn_log_line(tmp_path, tiny_config):
    config = dataclasses.replace(
        tiny_config, run=dataclasses.replace(tiny_config.run, steps=4, checkpoint_every=2, num_threads=1)
    )
    train(config, tmp_path / "run", log=lambda *_: None)
    newest = RunDir(tmp_path / "run").checkpoints()[-1]
    assert newest.name == "step_0000004"
    (newest / "model.safetensors").write_bytes(b"damaged")
    with (tmp_path / "run" / "log.jsonl").open("a") as log:
        log.write('{"step": 5, "lo')  # a line cut off by a kill -9
    messages = []
    train(config, tmp_path / "run", resume=True, log=messages.append)
    assert any(m.startswith("skipping step_0000004: checkpoint file") for m in messages), messages
    assert any(m.startswith("resuming from") and m.endswith("step_0000002") for m in messages), messages
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
    assert RunDir(tmp_path / "run").latest_checkpoint(warn=messages.append).name == "step_0000004"
