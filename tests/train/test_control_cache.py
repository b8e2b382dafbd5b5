"""The disk cache of a ControlNet run's Canny controls: written once under the data root, read back on the
next start or --resume, keyed by the data and the control's parameters; a damaged or foreign file is
computed again, and kinds that are cheap to compute are never cached."""

from __future__ import annotations

import torch

from ddpm.data import load_dataset
from ddpm.train.control_cache import cache_key, cache_path, cached_controls
from ddpm.train.control_data import compute_controls, control_training_data
from ddpm.train.run_data import load_data
from tests.conftest import control_run_config


def quiet_compute(dataset, kind, calls):
    def compute():
        calls.append(kind)
        return compute_controls(dataset, kind, lambda *_: None)

    return compute


def test_canny_controls_are_computed_once_then_read_back(tmp_path):
    digits, calls, said = load_dataset("digits", split="test"), [], []
    first = cached_controls(digits, "canny", tmp_path, quiet_compute(digits, "canny", calls), said.append)
    path = cache_path(tmp_path, digits, "canny")
    assert path.parent == tmp_path / "controls" and path.name.startswith("digits-canny-") and path.is_file()
    again = cached_controls(digits, "canny", tmp_path, quiet_compute(digits, "canny", calls), said.append)
    assert calls == ["canny"] and torch.equal(first, again) and first.dtype == torch.uint8
    assert said[-1].startswith(f"read {len(digits)} canny controls from the cache")
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left behind


def test_the_key_follows_the_data_and_only_slow_kinds_are_cached(tmp_path):
    test, train = load_dataset("digits", split="test"), load_dataset("digits", split="train")
    assert cache_key(test, "canny") != cache_key(train, "canny") != cache_key(train, "mask")
    calls = []
    cached_controls(test, "mask", tmp_path, quiet_compute(test, "mask", calls), print)
    cached_controls(test, "mask", tmp_path, quiet_compute(test, "mask", calls), print)
    assert calls == ["mask", "mask"] and not (tmp_path / "controls").exists()


def test_a_damaged_or_foreign_cache_file_is_computed_again_and_replaced(tmp_path):
    digits, calls, said = load_dataset("digits", split="test"), [], []
    path = cache_path(tmp_path, digits, "canny")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\x80\x04 a pickle, never loaded")
    controls = cached_controls(digits, "canny", tmp_path, quiet_compute(digits, "canny", calls), said.append)
    assert calls == ["canny"] and "is unreadable" in said[0]
    other = load_dataset("digits", split="train")
    foreign = cache_path(tmp_path, other, "canny")
    cached_controls(other, "canny", tmp_path, quiet_compute(other, "canny", calls), said.append)
    path.write_bytes(foreign.read_bytes())  # the right name, another data set's controls
    again = cached_controls(digits, "canny", tmp_path, quiet_compute(digits, "canny", calls), said.append)
    assert calls == ["canny"] * 3 and "holds other controls" in said[-1] and torch.equal(again, controls)


def test_a_control_run_reads_its_canny_controls_from_the_cache_on_the_next_start(control_base, tmp_path):
    config = control_run_config(control_base, "canny", 1, f"data.root={tmp_path}")
    said = []
    first, _ = control_training_data(config, load_data(config), log=said.append)
    assert said[-1].startswith("computed") and (tmp_path / "controls").is_dir()
    second, _ = control_training_data(config, load_data(config), log=said.append)
    assert said[-1].startswith("read") and torch.equal(first.controls, second.controls)
    assert first.fingerprint == second.fingerprint  # a resume sees the same data
