"""The data fingerprint follows the content: a file changed in place, even to the same size, changes it."""

from __future__ import annotations

import gzip
import io
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ddpm.data import load_dataset
from ddpm.data.dataset import Dataset
from tests.data.test_cifar import write_batches
from tests.data.test_folder import _rgb
from tests.data.test_idx import write_idx_set


def _dataset(data: torch.Tensor, labels: torch.Tensor | None = None, names: tuple[str, ...] | None = None):
    return Dataset("x", "images", data, labels, names, "same recipe")


def test_the_fingerprint_covers_images_labels_and_class_names() -> None:
    images = torch.zeros(4, 1, 2, 2, dtype=torch.uint8)
    labels, names = torch.tensor([0, 1, 0, 1]), ("a", "b")
    base = _dataset(images, labels, names).fingerprint
    assert _dataset(images.clone(), labels.clone(), names).fingerprint == base  # content, not identity
    changed = images.clone()
    changed[3, 0, 1, 1] = 1
    assert _dataset(changed, labels, names).fingerprint != base
    assert _dataset(images, torch.tensor([0, 1, 1, 1]), names).fingerprint != base
    assert _dataset(images, labels, ("a", "c")).fingerprint != base
    assert _dataset(images.reshape(4, 1, 1, 4)).fingerprint != _dataset(images).fingerprint  # shape counts
    other = Dataset("x", "images", images, labels, names, "another recipe").fingerprint
    assert other != base and len(base) == 64


def _bmp(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "BMP")  # size depends only on width and height
    return buffer.getvalue()


def test_a_same_size_change_to_an_image_file_changes_the_fingerprint(tmp_path: Path) -> None:
    image = tmp_path / "x" / "cat" / "a.bmp"
    image.parent.mkdir(parents=True)
    image.write_bytes(_bmp(_rgb(1)))
    (tmp_path / "x" / "dog").mkdir()
    (tmp_path / "x" / "dog" / "b.bmp").write_bytes(_bmp(_rgb(2)))
    first, size = load_dataset(f"folder:{tmp_path / 'x'}", image_size=12).fingerprint, image.stat().st_size
    image.write_bytes(_bmp(_rgb(3)))
    assert image.stat().st_size == size
    assert load_dataset(f"folder:{tmp_path / 'x'}", image_size=12).fingerprint != first


def test_a_same_size_change_to_an_idx_file_changes_the_fingerprint(tmp_path: Path) -> None:
    write_idx_set(tmp_path, n_train=6)
    first = load_dataset(f"mnist:{tmp_path}").fingerprint
    path = tmp_path / "train-images-idx3-ubyte.gz"
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[-1] ^= 0xFF  # one pixel of the last image
    path.write_bytes(gzip.compress(bytes(raw), mtime=0))
    changed = load_dataset(f"mnist:{tmp_path}")
    assert changed.fingerprint != first and len(changed) == 6


def test_a_same_size_change_to_a_cifar_batch_changes_the_fingerprint(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    write_batches(folder, python2_format=False)
    first = load_dataset(f"cifar10:{folder}").fingerprint
    batch = folder / "data_batch_2"
    size = batch.stat().st_size
    data = np.full((3, 3072), 7, np.uint8)  # other pixels and labels, same layout: same file size
    batch.write_bytes(pickle.dumps({b"batch_label": b"data_batch_2", b"labels": [2, 3, 4], b"data": data}))
    assert batch.stat().st_size == size
    assert load_dataset(f"cifar10:{folder}").fingerprint != first


@pytest.mark.parametrize("spec", ["digits", "swissroll"])
def test_reloading_gives_the_same_fingerprint(spec: str) -> None:
    assert load_dataset(spec).fingerprint == load_dataset(spec).fingerprint
