"""The memorisation picture puts the closest samples first, above their nearest training images."""

import torch

from ddpm.data import load_dataset
from ddpm.eval.memorisation import memorisation
from ddpm.viz.memorisation import closest_pairs_figure


def test_the_closest_pairs_picture_labels_each_pair_with_its_distance():
    train_set, test_set = load_dataset("digits", split="train"), load_dataset("digits", split="test")
    train, test = train_set.batch(torch.arange(len(train_set))), test_set.batch(torch.arange(len(test_set)))
    samples = torch.cat([train[:3] + 0.01, test[:5]])
    result = memorisation(samples, train, test[5:])
    figure = closest_pairs_figure(samples, train, result, k=4)
    labels = [t.get_text() for t in figure.axes[0].get_xticklabels()]
    assert len(labels) == 4 and labels[:3] == ["0.08"] * 3  # the three copies first (0.01 · √64)
    assert [t.get_text() for t in figure.axes[0].get_yticklabels()] == ["sample", "nearest train"]
