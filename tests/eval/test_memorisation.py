"""The memorisation check: copies of training images are flagged, new images are not."""

import pytest
import torch

from ddpm.data import load_dataset
from ddpm.eval.memorisation import memorisation, nearest_neighbours


def _digits():
    train, test = load_dataset("digits", split="train"), load_dataset("digits", split="test")
    return train.batch(torch.arange(len(train))), test.batch(torch.arange(len(test)))


def test_nearest_neighbours_match_a_brute_force_search():
    generator = torch.Generator().manual_seed(0)
    queries = torch.randn(700, 1, 4, 4, generator=generator, dtype=torch.float64)  # > one block of 512
    reference = torch.randn(50, 1, 4, 4, generator=generator, dtype=torch.float64)
    distances, indices = nearest_neighbours(queries, reference)
    brute = ((queries.reshape(700, 1, -1) - reference.reshape(1, 50, -1)) ** 2).sum(-1).sqrt()
    torch.testing.assert_close(distances, brute.min(1).values, rtol=1e-9, atol=1e-9)
    assert torch.equal(indices, brute.argmin(1))


def test_replayed_training_images_are_flagged_and_held_out_images_are_not():
    train, test = _digits()
    copies = train[torch.arange(0, 600, 2)] + 0.002  # replayed (up to an invisible shift)
    copied = memorisation(copies, train, test)
    assert copied.share_below == 1.0 and torch.equal(copied.nearest, torch.arange(0, 600, 2))
    # Real images the model never saw: the share is the quantile itself, up to sampling noise.
    fresh = memorisation(test[:150], train, test[150:])
    assert 0.0 <= fresh.share_below <= 0.15
    metrics = fresh.metrics()
    assert metrics["memorised_share_expected"] == 0.05
    assert metrics["nn_train_distance_median"] > metrics["nn_train_distance_threshold"]


def test_noise_is_far_from_every_training_image():
    train, test = _digits()
    noise = torch.rand(100, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    result = memorisation(noise, train, test)
    assert result.share_below == 0.0
    assert float(result.distances.min()) > result.threshold


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda t: nearest_neighbours(torch.zeros(2, 1, 4, 4), t), r"samples of shape \(1, 4, 4\) cannot be"),
        (lambda t: nearest_neighbours(torch.zeros(0, 1, 8, 8), t), r"at least one query and one reference"),
        (lambda t: memorisation(t[:2], t, t, quantile=1.0), r"quantile=1.0 is invalid"),
    ],
)
def test_bad_inputs_are_refused(call, message):
    train = torch.zeros(3, 1, 8, 8)
    with pytest.raises(ValueError, match=message):
        call(train)

