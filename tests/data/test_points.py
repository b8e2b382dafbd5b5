"""Generated 2-D point sets: shape, seeding, splits, scale, labels."""

from __future__ import annotations

import math

import pytest
import torch

from ddpm.data import load_dataset
from ddpm.data.points import SWISSROLL

POINT_SETS = ("swissroll", "moons", "gaussians8")


@pytest.mark.parametrize("name", POINT_SETS)
def test_shape_dtype_and_scale(name: str) -> None:
    data = load_dataset(name, num_points=5000)
    assert data.kind == "points" and len(data) == 5000 and data.sample_shape == (2,)
    assert data.data.dtype == torch.float32
    assert data.data.abs().max() < 1.5  # roughly [-1, 1]: noise tails stay inside 1.5
    assert data.data.abs().max() > 0.7  # and actually uses the square
    batch = data.batch(torch.tensor([0, 3, 4]))
    assert batch.dtype == torch.float32 and torch.equal(batch, data.data[[0, 3, 4]])


@pytest.mark.parametrize("name", POINT_SETS)
def test_seeded_determinism_and_distinct_draws(name: str) -> None:
    first = load_dataset(name, num_points=300, seed=7)
    again = load_dataset(name, num_points=300, seed=7)
    assert torch.equal(first.data, again.data) and first.fingerprint == again.fingerprint
    for other in (
        load_dataset(name, num_points=300, seed=8),
        load_dataset(name, num_points=300, seed=7, split="test"),
    ):
        assert not torch.allclose(first.data, other.data)
        assert other.fingerprint != first.fingerprint
    assert load_dataset(name, num_points=301, seed=7).fingerprint != first.fingerprint


def test_labels_follow_the_components() -> None:
    assert load_dataset("swissroll", num_points=10).labels is None
    moons = load_dataset("moons", num_points=4000)
    assert moons.class_names == ("upper", "lower") and moons.labels.dtype == torch.int64
    upper, lower = moons.data[moons.labels == 0], moons.data[moons.labels == 1]
    assert upper[:, 1].mean() > lower[:, 1].mean() + 0.3  # the upper moon sits above the lower one
    assert 0.45 < (moons.labels == 0).float().mean() < 0.55
    rings = load_dataset("gaussians8", num_points=4000)
    assert rings.num_classes == 8
    for k in range(8):
        center = rings.data[rings.labels == k].mean(0)
        angle = 2 * math.pi * k / 8
        assert torch.allclose(center, torch.tensor([math.cos(angle), math.sin(angle)]), atol=0.02)


def test_swissroll_is_a_spiral_of_growing_radius() -> None:
    # noiseless angle t ∈ [1.5π, 4.5π] and radius t · scale: radius from the centre lies in that band
    points = load_dataset("swissroll", num_points=4000).data
    radius = points.norm(dim=1) / SWISSROLL["scale"]
    assert radius.min() > 1.5 * math.pi - 2.0 and radius.max() < 4.5 * math.pi + 2.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_points": 0}, r"num_points=0 must be an integer ≥ 1"),
        ({"seed": -1}, r"seed=-1 must be an integer ≥ 0"),
        ({"split": "all"}, r"split 'all' is not available for 'moons'; allowed: train, test"),
        ({"image_size": 8}, r"'moons' is 2-D points: image_size and channels must be None"),
        ({"channels": 1}, r"'moons' is 2-D points"),
    ],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        load_dataset("moons", **kwargs)
