"""scikit-learn's bundled 8×8 handwritten digits (UCI optdigits test set): 1,797 images, offline."""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from ddpm.data.dataset import Dataset, fingerprint
from ddpm.data.images import conform_images

DIGITS_TEST_SIZE = 297  # 1,500 train / 297 test
DIGITS_SPLIT_SEED = 0  # fixed: the split must not move when a run's seed changes
DIGITS_CLASSES = tuple(str(d) for d in range(10))


def stratified_test_mask(labels: np.ndarray, test_size: int, seed: int) -> np.ndarray:
    """Boolean (N,) mask of exactly ``test_size`` samples, each class represented in proportion.

    Every sample gets its evenly spaced quantile (k + ½)/n_c within a random order of its class;
    the ``test_size`` smallest quantiles form the test set, so each class contributes ≈ its share.
    """
    rng = np.random.default_rng(seed)
    quantile = np.empty(len(labels))
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        quantile[members[rng.permutation(len(members))]] = (np.arange(len(members)) + 0.5) / len(members)
    mask = np.zeros(len(labels), dtype=bool)
    mask[np.argsort(quantile, kind="stable")[:test_size]] = True
    return mask


def load_digits_dataset(spec: str, split: str, image_size: int | None, channels: int | None) -> Dataset:
    """Values 0..16 → uint8 round(v · 255/16); split "train" (1,500), "test" (297) or "all" (1,797)."""
    from sklearn.datasets import load_digits  # imported here: scikit-learn is slow to import

    raw = load_digits()
    images = np.rint(raw.images * (255 / 16)).astype(np.uint8)[:, None]  # (1797, 1, 8, 8)
    labels = raw.target.astype(np.int64)
    if split != "all":
        test = stratified_test_mask(labels, DIGITS_TEST_SIZE, DIGITS_SPLIT_SEED)
        keep = test if split == "test" else ~test
        images, labels = images[keep], labels[keep]
    images = conform_images(images, image_size, channels)
    return Dataset(
        spec=spec,
        kind="images",
        data=torch.from_numpy(images),
        labels=torch.from_numpy(labels),
        class_names=DIGITS_CLASSES,
        fingerprint=fingerprint(
            "digits", split, image_size, channels, DIGITS_SPLIT_SEED, _sha256(raw.images), _sha256(raw.target)
        ),
    )


def _sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()
