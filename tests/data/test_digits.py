"""scikit-learn's 8×8 digits: sizes, storage, scaling and the fixed stratified split."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_digits

from ddpm.data import load_dataset
from ddpm.data.digits import stratified_test_mask


def test_all_digits_are_uint8_images_with_ten_classes() -> None:
    data = load_dataset("digits", split="all")
    assert len(data) == 1797 and data.sample_shape == (1, 8, 8) and data.kind == "images"
    assert data.data.dtype == torch.uint8 and data.data.is_contiguous()
    assert data.num_classes == 10 and data.class_names == tuple("0123456789")
    assert data.labels.dtype == torch.int64 and set(data.labels.tolist()) == set(range(10))
    raw = load_digits()
    expected = np.rint(raw.images * 255 / 16).astype(np.uint8)
    assert np.array_equal(data.data[:, 0].numpy(), expected)  # stored in file order, values round(v·255/16)
    assert np.array_equal(data.labels.numpy(), raw.target)


def test_batch_spans_minus_one_to_one() -> None:
    data = load_dataset("digits", split="all")
    batch = data.batch(torch.arange(len(data)))
    assert batch.dtype == torch.float32 and batch.min() == -1.0 and batch.max() == 1.0


def test_split_is_fixed_stratified_and_disjoint() -> None:
    train, test = load_dataset("digits"), load_dataset("digits", split="test")
    assert (len(train), len(test)) == (1500, 297)
    assert torch.equal(train.data, load_dataset("digits", seed=5).data)  # the run seed never moves it
    counts = torch.bincount(test.labels, minlength=10)
    assert counts.min() >= 28 and counts.max() <= 31  # ≈ 297/10 per class
    train_rows = {bytes(row) for row in train.data.flatten(1).numpy()}
    overlap = sum(bytes(row) in train_rows for row in test.data.flatten(1).numpy())
    assert overlap < 5  # the few duplicates are identical digit images, not shared samples
    assert len({train.fingerprint, test.fingerprint, load_dataset("digits", split="all").fingerprint}) == 3


def test_stratified_mask_takes_each_class_in_proportion() -> None:
    labels = np.array([0] * 60 + [1] * 30 + [2] * 10)
    mask = stratified_test_mask(labels, test_size=20, seed=3)
    assert mask.sum() == 20
    assert np.bincount(labels[mask]).tolist() == [12, 6, 2]
    assert np.array_equal(mask, stratified_test_mask(labels, test_size=20, seed=3))
    assert not np.array_equal(mask, stratified_test_mask(labels, test_size=20, seed=4))


def test_image_size_and_channels_resize_and_repeat() -> None:
    data = load_dataset("digits", split="test", image_size=16, channels=3)
    assert data.sample_shape == (3, 16, 16) and data.data.dtype == torch.uint8
    assert torch.equal(data.data[:, 0], data.data[:, 1]) and torch.equal(data.data[:, 0], data.data[:, 2])
    native = load_dataset("digits", split="test")
    # bicubic upsampling by 2 keeps the mean brightness close
    assert abs(data.data.float().mean() - native.data.float().mean()) < 3
    assert data.fingerprint != native.fingerprint
