import json

import pytest
import torch

from ddpm.rundir import CheckpointError, RunDir, verify_checkpoint
from ddpm.train.checkpoint import load_checkpoint, optimizer_from_tensors, save_checkpoint


def _state(seed: int = 0) -> tuple[dict, dict, dict]:
    torch.manual_seed(seed)
    net = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
    net(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    return net.state_dict(), {k: v + 1 for k, v in net.state_dict().items()}, optimizer.state_dict()


def test_round_trip_restores_every_tensor(tmp_path):
    model, ema, optimizer = _state()
    path = save_checkpoint(tmp_path, 10, model=model, ema=ema, optimizer=optimizer, meta={"x": 1})
    loaded = load_checkpoint(path)
    assert loaded.step == 10 and loaded.meta["x"] == 1
    for name, value in model.items():
        assert torch.equal(loaded.model[name], value)
        assert torch.equal(loaded.ema[name], ema[name])
    restored = optimizer_from_tensors(loaded.optimizer, loaded.meta["optimizer"])
    for index, state in optimizer["state"].items():
        for key, value in state.items():
            assert torch.equal(torch.as_tensor(restored["state"][index][key]), torch.as_tensor(value))
    net = torch.nn.Linear(3, 2)
    torch.optim.AdamW(net.parameters(), lr=1e-3).load_state_dict(restored)  # accepted by torch


def test_an_objectives_own_tensors_share_the_trainer_file_apart_from_the_optimizers(tmp_path):
    model, ema, optimizer = _state()
    extra = {"discriminator.w": torch.arange(3.0), "disc_optimizer.state.0.step": torch.tensor(2.0)}
    sampler = {"history": torch.ones(2)}
    path = save_checkpoint(tmp_path, 1, model=model, ema=ema, optimizer=optimizer, meta={},
                           timestep_sampler=sampler, extra=extra)  # fmt: skip
    loaded = load_checkpoint(path)
    assert loaded.extra.keys() == extra.keys() and all(torch.equal(loaded.extra[k], extra[k]) for k in extra)
    assert loaded.timestep_sampler.keys() == {"history"}
    assert all(key.startswith("state.") for key in loaded.optimizer)
    optimizer_from_tensors(loaded.optimizer, loaded.meta["optimizer"])  # nothing foreign among the moments
    assert load_checkpoint(save_checkpoint(tmp_path, 2, model=model, ema=ema, optimizer=optimizer,
                                           meta={})).extra == {}  # fmt: skip


@pytest.mark.parametrize("key", ["state.0.exp_avg", "timestep_sampler.history"])
def test_extra_tensors_may_not_take_the_trainers_own_prefixes(tmp_path, key):
    model, ema, optimizer = _state()
    with pytest.raises(ValueError, match=rf"^extra checkpoint tensor '{key}' takes a prefix the trainer's"):
        save_checkpoint(tmp_path, 1, model=model, ema=ema, optimizer=optimizer, meta={},
                        extra={key: torch.zeros(1)})  # fmt: skip
    assert not (tmp_path / "checkpoints").exists()


def test_keep_last_prunes_only_after_the_new_one_is_complete(tmp_path):
    model, ema, optimizer = _state()
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, step, model=model, ema=ema, optimizer=optimizer, meta={}, keep_last=2)
    assert [p.name for p in RunDir(tmp_path).checkpoints()] == ["step_0000002", "step_0000003"]
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".tmp")]


def test_corrupt_file_is_detected_and_skipped(tmp_path):
    model, ema, optimizer = _state()
    save_checkpoint(tmp_path, 1, model=model, ema=ema, optimizer=optimizer, meta={})
    newest = save_checkpoint(tmp_path, 2, model=model, ema=ema, optimizer=optimizer, meta={})
    target = newest / "ema.safetensors"
    data = bytearray(target.read_bytes())
    data[-1] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"ema.safetensors does not match its manifest"):
        verify_checkpoint(newest)
    messages = []
    assert RunDir(tmp_path).latest_checkpoint(warn=messages.append).name == "step_0000001"
    assert "skipping step_0000002" in messages[0]


def test_missing_manifest_is_refused(tmp_path):
    model, ema, optimizer = _state()
    path = save_checkpoint(tmp_path, 1, model=model, ema=ema, optimizer=optimizer, meta={})
    (path / "manifest.json").unlink()
    with pytest.raises(CheckpointError, match=r"has no readable manifest.json"):
        verify_checkpoint(path)


def test_write_error_names_the_path_and_leaves_no_temp_files(tmp_path, monkeypatch):
    model, ema, optimizer = _state()
    first = save_checkpoint(tmp_path, 1, model=model, ema=ema, optimizer=optimizer, meta={})

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("ddpm.train.checkpoint.write_durably", disk_full)
    with pytest.raises(OSError, match=r"could not write checkpoint .*step_0000002: No space left on device"):
        save_checkpoint(tmp_path, 2, model=model, ema=ema, optimizer=optimizer, meta={})
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step_0000001"]
    assert json.loads((first / "meta.json").read_text())["step"] == 1
    verify_checkpoint(first)
