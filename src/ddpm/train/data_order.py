"""Stateless data order and per-step randomness, so a resumed run repeats the uninterrupted one.

Everything random in step ``s`` is drawn from generators seeded by (run seed, step): data order
from a per-epoch permutation, noise and timesteps of the loss, flips and dropout. Resuming at step
``s`` therefore needs no RNG state at all: it is a function of ``s``.
"""

from __future__ import annotations

import torch
from torch import Tensor

_MIX = 0x9E3779B97F4A7C15  # golden-ratio constant: spreads (seed, counter) pairs over 63 bits


def mix_seed(seed: int, *counters: int) -> int:
    """A 63-bit seed from a run seed and counters (step, epoch, rank, …)."""
    value = seed & 0xFFFFFFFFFFFFFFFF
    for counter in counters:
        value = ((value ^ (counter + 1)) * _MIX + 0x632BE59BD9B4E019) & 0xFFFFFFFFFFFFFFFF
        value ^= value >> 29
    return value & 0x7FFFFFFFFFFFFFFF


class EpochOrder:
    """Batch ``s`` = items [s·B, (s+1)·B) of the concatenated per-epoch random permutations."""

    def __init__(self, num_items: int, batch_size: int, seed: int) -> None:
        self.num_items = num_items
        self.batch_size = batch_size
        self.seed = seed
        self._cache: dict[int, Tensor] = {}

    def permutation(self, epoch: int) -> Tensor:
        if epoch not in self._cache:
            generator = torch.Generator().manual_seed(mix_seed(self.seed, 0xDA7A, epoch))
            self._cache = {e: p for e, p in self._cache.items() if e >= epoch - 1}
            self._cache[epoch] = torch.randperm(self.num_items, generator=generator)
        return self._cache[epoch]

    def batch_indices(self, step: int) -> Tensor:
        start = step * self.batch_size
        positions = torch.arange(start, start + self.batch_size)
        epochs = positions // self.num_items
        out = torch.empty(self.batch_size, dtype=torch.long)
        for epoch in epochs.unique().tolist():
            mask = epochs == epoch
            out[mask] = self.permutation(epoch)[positions[mask] % self.num_items]
        return out

    def epoch_of(self, step: int) -> float:
        return step * self.batch_size / self.num_items
