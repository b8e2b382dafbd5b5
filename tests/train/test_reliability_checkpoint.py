"""Checkpoints survive crashes, Ctrl-C, full disks and damage: every failure leaves the last good one.

Failures are injected at every call inside a save (each file write, each fsync, the rename), as an
OSError (disk full) or a KeyboardInterrupt (a second Ctrl-C); a real write limit (RLIMIT_FSIZE) makes
the kernel refuse the bytes; 100 random byte flips and truncations must all be refused.
"""

import errno
import functools
import json
import os
import random
import shutil
import signal
import subprocess
import sys

import pytest
import torch

from ddpm.rundir import SCRATCH_PATTERN, CheckpointError, RunDir, verify_checkpoint
from ddpm.safe_files import atomic_write_text
from ddpm.train import checkpoint as ckpt
from ddpm.train.checkpoint import load_checkpoint, mark_best, save_checkpoint
from ddpm.train.signals import StopRequests


@functools.cache
def _state(seed: int = 0) -> dict:
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.GroupNorm(4, 8), torch.nn.Conv2d(8, 3, 1))
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
    net(torch.randn(2, 3, 8, 8)).square().mean().backward()
    optimizer.step()
    ema = {k: v + 1 for k, v in net.state_dict().items()}
    return {"model": net.state_dict(), "ema": ema, "optimizer": optimizer.state_dict(), "meta": {"x": seed}}


def _save(run_dir, step, **kwargs):
    return save_checkpoint(run_dir, step, **_state(step), **kwargs)


def _scratch(run_dir):
    return sorted(p.name for p in (run_dir / "checkpoints").iterdir() if SCRATCH_PATTERN.match(p.name))


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _fail_at(monkeypatch, name: str, call: int, error: BaseException) -> None:
    original, calls = getattr(ckpt, name), [0]

    def failing(*args, **kwargs):
        calls[0] += 1
        if calls[0] == call:
            raise error
        return original(*args, **kwargs)

    monkeypatch.setattr(ckpt, name, failing)


# write_durably: 4 files + manifest; fsync_dir: the temporary folder, then checkpoints/; _swap_in: the rename
FAILURE_POINTS = [("write_durably", k) for k in range(1, 6)] + [("fsync_dir", 1), ("_swap_in", 1)]


@pytest.mark.parametrize("error", [OSError(errno.ENOSPC, "No space left on device"), KeyboardInterrupt()])
@pytest.mark.parametrize(("name", "call"), FAILURE_POINTS)
def test_a_failed_save_leaves_the_previous_checkpoints_and_no_trace(tmp_path, monkeypatch, name, call, error):
    first = _save(tmp_path, 1)
    _fail_at(monkeypatch, name, call, error)
    if isinstance(error, OSError):
        with pytest.raises(
            OSError, match=r"could not write checkpoint .*step_0000002: No space left on device"
        ):
            _save(tmp_path, 2, keep_last=1)
    else:
        with pytest.raises(KeyboardInterrupt):
            _save(tmp_path, 2, keep_last=1)
    assert [p.name for p in RunDir(tmp_path).checkpoints()] == ["step_0000001"]
    assert _scratch(tmp_path) == []
    assert load_checkpoint(first).meta["x"] == 1


@pytest.mark.parametrize("error", [OSError(errno.EIO, "Input/output error"), KeyboardInterrupt()])
def test_a_failed_resave_of_the_same_step_keeps_the_old_copy(tmp_path, monkeypatch, error):
    _save(tmp_path, 1)
    monkeypatch.setattr(ckpt.os, "replace", _replace_failing_on_second_call(os.replace, error))
    with pytest.raises(type(error)):
        save_checkpoint(tmp_path, 1, **{**_state(5), "meta": {"x": "new"}})
    assert [p.name for p in RunDir(tmp_path).checkpoints()] == ["step_0000001"]
    assert load_checkpoint(RunDir(tmp_path).checkpoints()[0]).meta["x"] == 1  # the old copy is back
    assert _scratch(tmp_path) == []


def _replace_failing_on_second_call(replace, error):
    calls = [0]

    def failing(source, target):
        calls[0] += 1
        if calls[0] == 2:  # the first moves the old copy aside, the second would put the new one in place
            raise error
        return replace(source, target)

    return failing


def test_a_crash_between_the_renames_of_a_resave_is_recovered(tmp_path):
    """A kill -9 after the old copy moved aside and before the new one arrived: nothing is lost."""
    path = _save(tmp_path, 4)
    aside = path.parent / f".old-step_0000004-{_dead_pid()}"
    os.replace(path, aside)
    assert RunDir(tmp_path).checkpoints() == [aside]  # served from the aside copy
    assert RunDir(tmp_path).latest_checkpoint() == aside and load_checkpoint(aside).step == 4
    _save(tmp_path, 5)  # the next save puts it back
    assert [p.name for p in RunDir(tmp_path).checkpoints()] == ["step_0000004", "step_0000005"]
    assert _scratch(tmp_path) == []


def test_scratch_of_dead_processes_is_removed_and_of_live_ones_kept(tmp_path):
    _save(tmp_path, 1)
    folder = tmp_path / "checkpoints"
    dead, live = _dead_pid(), os.getppid()
    for name in (f".tmp-step_0000002-{dead}", f".del-step_0000000-{dead}", f".tmp-step_0000002-{live}"):
        (folder / name).mkdir()
        (folder / name / "model.safetensors").write_bytes(b"half a file")
    _save(tmp_path, 3)
    assert _scratch(tmp_path) == [f".tmp-step_0000002-{live}"]


def test_pruning_keeps_the_newest_and_never_the_just_written_one_away(tmp_path):
    for step in (2, 4, 6):
        _save(tmp_path, step, keep_last=1)
    assert [p.name for p in RunDir(tmp_path).checkpoints()] == ["step_0000006"]
    # resumed from an older step (a newer one was damaged): the new save is kept, newer ones untouched
    _save(tmp_path, 8, keep_last=1)
    _save(tmp_path, 7, keep_last=1)
    assert [p.name for p in RunDir(tmp_path).checkpoints()] == ["step_0000007", "step_0000008"]


def test_mark_best_is_a_verified_copy(tmp_path):
    path = _save(tmp_path, 3)
    best = mark_best(path)
    mark_best(path)  # again, over the existing one
    assert verify_checkpoint(best)["step"] == 3 and _scratch(tmp_path) == []


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="needs POSIX file size limits")
def test_a_real_write_limit_gives_a_clear_error_and_keeps_the_previous(tmp_path):
    import resource

    first = _save(tmp_path, 1)
    limit = (first / "model.safetensors").stat().st_size // 2
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit: EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        with pytest.raises(OSError, match=r"could not write checkpoint .*step_0000002: File too large"):
            _save(tmp_path, 2)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous_handler)
    assert [p.name for p in RunDir(tmp_path).checkpoints()] == ["step_0000001"] and _scratch(tmp_path) == []
    assert load_checkpoint(first).step == 1


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores folder permissions")
def test_a_read_only_folder_gives_a_clear_error(tmp_path):
    first = _save(tmp_path, 1)
    (tmp_path / "checkpoints").chmod(0o555)
    try:
        with pytest.raises(OSError, match=r"could not write checkpoint .*step_0000002: Permission denied"):
            _save(tmp_path, 2)
    finally:
        (tmp_path / "checkpoints").chmod(0o755)
    assert RunDir(tmp_path).checkpoints() == [first]


def test_100_random_byte_flips_and_truncations_are_all_refused(tmp_path):
    original = _save(tmp_path / "run", 7)
    names = sorted(p.name for p in original.iterdir())
    rng = random.Random(0)
    outcomes = []
    for trial in range(100):
        copy = tmp_path / f"trial{trial}" / "step_0000007"
        shutil.copytree(original, copy)
        target = copy / names[trial % len(names)]  # every file gets its share
        data = bytearray(target.read_bytes())
        if trial % 2 == 0:
            data[rng.randrange(len(data))] ^= rng.randint(1, 255)
        else:
            del data[rng.randrange(len(data)) :]
        target.write_bytes(bytes(data))
        try:
            load_checkpoint(copy)
            outcomes.append("loaded")
        except CheckpointError:
            outcomes.append("refused")
        shutil.rmtree(copy.parent)
    assert outcomes.count("refused") == 100


def test_an_equal_but_rewritten_manifest_is_refused(tmp_path):
    path = _save(tmp_path, 1)
    manifest = json.loads((path / "manifest.json").read_text())
    (path / "manifest.json").write_text(json.dumps(manifest))  # same content, other bytes
    with pytest.raises(CheckpointError, match=r"manifest.json has been modified"):
        verify_checkpoint(path)


def test_a_renamed_checkpoint_is_refused(tmp_path):
    path = _save(tmp_path, 1)
    moved = path.parent / "step_0000009"
    os.replace(path, moved)
    with pytest.raises(CheckpointError, match=r"step_0000009 holds step 1, not the step its name says"):
        verify_checkpoint(moved)


def test_atomic_text_write_leaves_old_or_new(tmp_path, monkeypatch):
    target = tmp_path / "config.toml"
    stale = tmp_path / f".tmp-config.toml-{_dead_pid()}"  # left by a writer killed mid-write
    stale.write_text("half")
    atomic_write_text(target, "old = 1\n")
    assert not stale.exists()
    monkeypatch.setattr(
        "ddpm.safe_files.os.replace", _raise(OSError(errno.ENOSPC, "No space left on device"))
    )
    with pytest.raises(OSError):
        atomic_write_text(target, "new = 2\n")
    assert target.read_text() == "old = 1\n" and [p.name for p in tmp_path.iterdir()] == ["config.toml"]


def _raise(error):
    def fail(*args, **kwargs):
        raise error

    return fail


def test_first_signal_requests_a_stop_and_a_second_ctrl_c_interrupts():
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with StopRequests() as stop:
        signal.raise_signal(signal.SIGTERM)
        assert stop.requested and stop.reason == "SIGTERM received"
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before  # restored
