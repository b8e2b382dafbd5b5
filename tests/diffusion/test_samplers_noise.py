"""Per-sample seeds and noise: image i's randomness depends on its own seed only."""

import numpy as np
import pytest
import torch
from diffusers.utils.torch_utils import randn_tensor

from ddpm.diffusion.samplers import PerSampleGenerators, per_sample_noise, sample_seeds


def test_sample_seeds_depend_only_on_base_seed_and_index():
    seeds = sample_seeds(7, 10)
    assert seeds == sample_seeds(7, 10)
    assert sample_seeds(7, 4, offset=6) == seeds[6:]
    assert all(isinstance(s, int) and 0 <= s < 2**63 for s in seeds)
    assert len(set(seeds)) == 10


def test_neighbouring_base_seeds_share_no_images():
    assert not set(sample_seeds(0, 1000)) & set(sample_seeds(1, 1000))


def test_per_sample_noise_matches_diffusers_list_of_generators():
    seeds = [3, 1, 4, 1, 5]
    ours = per_sample_noise(seeds, (3, 4, 4))
    theirs = randn_tensor((5, 3, 4, 4), generator=[torch.Generator().manual_seed(s) for s in seeds])
    assert ours.shape == (5, 3, 4, 4) and ours.dtype == torch.float32
    assert torch.equal(ours, theirs)


def test_per_sample_noise_rows_do_not_depend_on_the_batch():
    seeds = sample_seeds(11, 6)
    whole = per_sample_noise(seeds, (2, 5))
    parts = torch.cat([per_sample_noise(seeds[:2], (2, 5)), per_sample_noise(seeds[2:], (2, 5))])
    assert torch.equal(whole, parts)
    assert not torch.equal(whole[0], whole[1])


def test_generators_continue_between_draws():
    generators = PerSampleGenerators([5, 6])
    first, second = generators.randn((3,), "cpu", torch.float32), generators.randn((3,), "cpu", torch.float32)
    reference = torch.Generator().manual_seed(5)
    assert torch.equal(first[0], torch.randn(3, generator=reference))
    assert torch.equal(second[0], torch.randn(3, generator=reference))


def test_per_sample_noise_casts_after_drawing_in_float32():
    assert torch.equal(per_sample_noise([1], (4,), dtype=torch.float64), per_sample_noise([1], (4,)).double())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"base_seed": -1, "n": 3}, r"base_seed=-1 is invalid; it must be an integer ≥ 0"),
        ({"base_seed": 0, "n": -2}, r"n=-2 is invalid"),
        ({"base_seed": 0, "n": 2, "offset": -1}, r"offset=-1 is invalid"),
        ({"base_seed": 1.5, "n": 2}, r"base_seed=1.5 is invalid"),
    ],
)
def test_sample_seeds_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sample_seeds(**kwargs)


@pytest.mark.parametrize(
    ("seeds", "shape", "match"),
    [
        ([], (2,), "seeds is empty"),
        ([1, -4], (2,), r"seed -4 is invalid; seeds must be integers ≥ 0"),
        ([1], (0, 3), r"shape \(0, 3\) is invalid"),
    ],
)
def test_per_sample_noise_errors(seeds, shape, match):
    with pytest.raises(ValueError, match=match):
        per_sample_noise(seeds, shape)


def test_numpy_integer_seeds_are_accepted():
    assert torch.equal(per_sample_noise(np.arange(3), (2,)), per_sample_noise([0, 1, 2], (2,)))
