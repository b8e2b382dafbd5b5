"""Seeded 2-D toy distributions, scaled to lie roughly in [-1, 1]².

Each set is N i.i.d. draws from a fixed distribution; ``seed`` and ``split`` pick the draw, so
"test" is a fresh sample from the same distribution, never a subset of "train".
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from ddpm.data.dataset import Dataset, fingerprint
from ddpm.data.spec import POINT_SPLITS

PointSampler = Callable[[np.random.Generator, int], tuple[np.ndarray, np.ndarray | None]]

SWISSROLL = {"noise": 0.5, "scale": 1 / (4.5 * math.pi)}  # radius ≤ 4.5π before scaling → unit disk
MOONS = {"noise": 0.1, "center": (0.5, 0.25), "scale": 1 / 1.5}  # x ∈ [-1, 2] → [-1, 1]
GAUSSIANS8 = {"radius": 1.0, "std": 0.08}
MOONS_CLASSES = ("upper", "lower")
GAUSSIANS8_CLASSES = tuple(f"{45 * k}deg" for k in range(8))


def swissroll(rng: np.random.Generator, n: int) -> tuple[np.ndarray, None]:
    """The (x, z) plane of scikit-learn's make_swiss_roll: t = 1.5π(1 + 2u), (t cos t, t sin t) + noise.

    The 2-D swiss roll of Sohl-Dickstein et al. 2015 (Fig. 1); Gaussian noise (std 0.5) is added
    before scaling by 1/(4.5π), which maps the noiseless roll into the unit disk.
    """
    t = 1.5 * math.pi * (1 + 2 * rng.random(n))  # (n,)
    xy = np.stack([t * np.cos(t), t * np.sin(t)], axis=1)  # (n, 2)
    xy += SWISSROLL["noise"] * rng.standard_normal((n, 2))
    return xy * SWISSROLL["scale"], None


def moons(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's make_moons, angles drawn uniformly in [0, π].

    Upper moon (cos θ, sin θ), lower moon (1 − cos θ, ½ − sin θ), Gaussian noise (std 0.1), then
    centred and scaled by 1/1.5 so x ∈ [-1, 1].
    """
    label = rng.integers(0, 2, n)  # (n,) 0 = upper, 1 = lower
    theta = math.pi * rng.random(n)
    upper = np.stack([np.cos(theta), np.sin(theta)], axis=1)  # (n, 2)
    lower = np.stack([1 - np.cos(theta), 0.5 - np.sin(theta)], axis=1)
    xy = np.where(label[:, None] == 0, upper, lower) + MOONS["noise"] * rng.standard_normal((n, 2))
    return (xy - np.array(MOONS["center"])) * MOONS["scale"], label


def gaussians8(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Equal mixture of 8 isotropic Gaussians centred at angles 2πk/8 on a circle."""
    component = rng.integers(0, 8, n)  # (n,)
    angle = 2 * math.pi * component / 8
    centers = GAUSSIANS8["radius"] * np.stack([np.cos(angle), np.sin(angle)], axis=1)  # (n, 2)
    return centers + GAUSSIANS8["std"] * rng.standard_normal((n, 2)), component


SAMPLERS: dict[str, tuple[PointSampler, dict, tuple[str, ...] | None]] = {
    "swissroll": (swissroll, SWISSROLL, None),
    "moons": (moons, MOONS, MOONS_CLASSES),
    "gaussians8": (gaussians8, GAUSSIANS8, GAUSSIANS8_CLASSES),
}


def load_points(spec: str, name: str, split: str, num_points: int, seed: int) -> Dataset:
    """``num_points`` draws of the named distribution; the stream is seeded by (seed, split)."""
    if isinstance(num_points, bool) or not isinstance(num_points, int) or num_points < 1:
        raise ValueError(f"num_points={num_points!r} must be an integer ≥ 1")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed={seed!r} must be an integer ≥ 0")
    sampler, params, class_names = SAMPLERS[name]
    rng = np.random.default_rng([seed, POINT_SPLITS.index(split)])
    xy, label = sampler(rng, num_points)
    return Dataset(
        spec=spec,
        kind="points",
        data=torch.from_numpy(xy.astype(np.float32)),
        labels=None if label is None else torch.from_numpy(label.astype(np.int64)),
        class_names=class_names,
        fingerprint=fingerprint("points", name, params, num_points, seed, split),
    )
