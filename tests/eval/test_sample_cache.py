"""The disk cache of samples that are the same at every call (a ControlNet's base without control): drawn
once under its key, read back bit for bit, drawn again for any other key or a damaged or foreign file."""

from __future__ import annotations

import json

import torch
from safetensors import safe_open

from ddpm.eval.sample_cache import cached_samples, samples_key, samples_path

PARTS = {"base_sha256": "ab" * 32, "spec": {"schedule": "linear"}, "n": 3, "seed": 7, "labels": [1, 2, 3]}
SHAPE = (3, 1, 8, 8)


def _drawer(calls, seed=0):
    def draw():
        calls.append(seed)
        return torch.randn(SHAPE, generator=torch.Generator().manual_seed(seed))

    return draw


def test_samples_are_drawn_once_then_read_back_bit_for_bit(tmp_path):
    calls, said = [], []
    first = cached_samples(tmp_path, "base", PARTS, SHAPE, _drawer(calls), said.append)
    again = cached_samples(tmp_path, "base", PARTS, SHAPE, _drawer(calls, seed=1), said.append)
    path = samples_path(tmp_path, "base", PARTS)
    assert (
        calls == [0] and torch.equal(first, again) and said == [f"read 3 base samples from the cache {path}"]
    )
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left behind
    with safe_open(path, framework="pt") as file:
        metadata = file.metadata()
    assert metadata["key"] == samples_key(PARTS) and json.loads(metadata["parts"]) == PARTS


def test_any_other_part_is_another_key():
    keys = {samples_key(PARTS)}
    for name, value in (("seed", 8), ("n", 4), ("labels", [1, 2, 4]), ("spec", {"schedule": "cosine"})):
        keys.add(samples_key({**PARTS, name: value}))
    assert len(keys) == 5


def test_a_damaged_or_foreign_file_is_drawn_again_and_replaced(tmp_path):
    calls, said = [], []
    path = samples_path(tmp_path, "base", PARTS)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\x80\x04 a pickle, never loaded")
    first = cached_samples(tmp_path, "base", PARTS, SHAPE, _drawer(calls), said.append)
    assert calls == [0] and "is unreadable" in said[0]
    other = {**PARTS, "seed": 8}
    cached_samples(tmp_path, "base", other, SHAPE, _drawer(calls, seed=1), said.append)
    path.write_bytes(samples_path(tmp_path, "base", other).read_bytes())  # the right name, another key
    again = cached_samples(tmp_path, "base", PARTS, SHAPE, _drawer(calls), said.append)
    assert calls == [0, 1, 0] and "holds other samples" in said[-1] and torch.equal(again, first)
    shorter = (2, *SHAPE[1:])  # the right key but not the shape asked for: drawn again
    cached_samples(tmp_path, "base", PARTS, shorter, lambda: first[:2], said.append)
    assert "holds other samples" in said[-1]
