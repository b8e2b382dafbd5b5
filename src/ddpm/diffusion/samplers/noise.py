"""Per-sample randomness: image i of a run is the same whatever the batch size or batch order.

Every image owns a seed and a CPU ``torch.Generator``; its initial noise x_T and every later noise draw
z come from that generator alone. CPU generators also make image i the same on CPU and CUDA (up to
arithmetic), at the price of moving the noise to the device once per step.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor


def sample_seeds(base_seed: int, n: int, offset: int = 0) -> list[int]:
    """Seeds of images ``offset … offset + n − 1`` of a run seeded with ``base_seed``.

    Each seed is NumPy's ``SeedSequence(base_seed, spawn_key=(i,))`` hashed to 63 bits, so it depends
    only on (base_seed, i): not on the batch size, and runs with neighbouring base seeds share no
    images (as they would with ``base_seed + i``).
    """
    for name, value in (("base_seed", base_seed), ("n", n), ("offset", offset)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{name}={value!r} is invalid; it must be an integer ≥ 0")
    return [
        int(
            np.random.SeedSequence(int(base_seed), spawn_key=(int(offset) + i,)).generate_state(1, np.uint64)[
                0
            ]
        )
        >> 1
        for i in range(n)
    ]


class PerSampleGenerators:
    """One CPU ``torch.Generator`` per sample; row i of every draw comes from generator i only."""

    def __init__(self, seeds: Sequence[int]) -> None:
        seeds = list(seeds)
        if not seeds:
            raise ValueError("seeds is empty; give one integer seed per sample")
        bad = [s for s in seeds if not isinstance(s, (int, np.integer)) or isinstance(s, bool) or s < 0]
        if bad:
            raise ValueError(f"seed {bad[0]!r} is invalid; seeds must be integers ≥ 0")
        self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]

    def __len__(self) -> int:
        return len(self.generators)

    def randn(self, shape: tuple[int, ...], device: torch.device | str | None, dtype: torch.dtype) -> Tensor:
        """Standard normal noise of shape (B, *shape), drawn in float32 on the CPU, then moved."""
        _check_shape(shape)
        noise = torch.empty(len(self.generators), *shape)  # (B, *shape), float32 on CPU
        for row, generator in zip(noise, self.generators, strict=True):
            row.normal_(generator=generator)  # same numbers as torch.randn((1, *shape), generator=...)
        return noise.to(device=device, dtype=dtype)


def per_sample_noise(
    seeds: Sequence[int],
    shape: tuple[int, ...],
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """(B, *shape) standard normal noise, row i from a fresh generator seeded with ``seeds[i]``.

    Equals ``torch.cat([torch.randn((1, *shape), generator=torch.Generator().manual_seed(s)) for s in
    seeds])`` (diffusers' ``randn_tensor`` with a list of generators), cast to ``dtype`` on ``device``.
    """
    return PerSampleGenerators(seeds).randn(tuple(shape), device, dtype)


def _check_shape(shape: tuple[int, ...]) -> None:
    if any(not isinstance(n, int) or n < 1 for n in shape):
        raise ValueError(f"shape {tuple(shape)!r} is invalid; every dimension must be an integer ≥ 1")
