"""CIFAR-10 python batches: a fake batch folder in the real layout, errors, and the download path."""

from __future__ import annotations

import io
import os
import pickle
import re
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

import ddpm.data.cifar as cifar
from ddpm.data import load_dataset
from ddpm.data.download import md5_of
from tests.data.test_pickle_reader import py2_batch_bytes

PER_BATCH = 3
BATCH_NAMES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch")


def fake_batch(index: int) -> tuple[np.ndarray, list[int]]:
    """Rows of 3072 bytes: the red plane all 10·index, green 10·index + 1, blue 10·index + 2."""
    data = np.repeat(np.array([10 * index, 10 * index + 1, 10 * index + 2], np.uint8), 1024)
    return np.tile(data, (PER_BATCH, 1)), [(index + k) % 10 for k in range(PER_BATCH)]


def write_batches(folder: Path, python2_format: bool = True) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for index, name in enumerate(BATCH_NAMES):
        data, labels = fake_batch(index)
        if python2_format and index % 2 == 0:  # the real files' layout …
            raw = py2_batch_bytes(data, labels)
        else:  # … and what Python 3's pickle.dumps writes
            raw = pickle.dumps({b"batch_label": name.encode(), b"labels": labels, b"data": data})
        (folder / name).write_bytes(raw)


def test_loads_train_and_test_from_a_fake_batch_folder(tmp_path: Path) -> None:
    write_batches(tmp_path / "cifar-10-batches-py")
    train = load_dataset(f"cifar10:{tmp_path}")  # the parent of cifar-10-batches-py works
    assert train.data.shape == (5 * PER_BATCH, 3, 32, 32) and train.data.dtype == torch.uint8
    assert train.class_names[:2] == ("airplane", "automobile") and train.num_classes == 10
    for index in range(5):
        rows = train.data[index * PER_BATCH : (index + 1) * PER_BATCH]
        for channel in range(3):  # R, G, B planes land in channels 0, 1, 2
            assert (rows[:, channel] == 10 * index + channel).all()
    assert train.labels.tolist() == [(i + k) % 10 for i in range(5) for k in range(PER_BATCH)]
    test = load_dataset(f"cifar10:{tmp_path / 'cifar-10-batches-py'}", split="test")
    assert test.data.shape == (PER_BATCH, 3, 32, 32) and (test.data[:, 0] == 50).all()
    both = load_dataset(f"cifar10:{tmp_path}", split="all", channels=1, image_size=16)
    assert both.data.shape == (6 * PER_BATCH, 1, 16, 16)
    assert len({train.fingerprint, test.fingerprint, both.fingerprint}) == 3


def test_root_form_and_missing_batches(tmp_path: Path) -> None:
    write_batches(tmp_path / "cifar10" / "cifar-10-batches-py", python2_format=False)
    assert len(load_dataset("cifar10", split="test", root=tmp_path, download=False)) == PER_BATCH
    (tmp_path / "cifar10" / "cifar-10-batches-py" / "data_batch_4").unlink()
    with pytest.raises(
        ValueError, match=r"CIFAR-10 batches not found in .*cifar10: put data_batch_1, .*, test_batch there"
    ):
        load_dataset("cifar10", root=tmp_path, download=False)


def test_a_batch_with_a_hostile_global_is_refused(tmp_path: Path) -> None:
    write_batches(tmp_path)
    canary = tmp_path / "canary"

    class Canary:
        def __reduce__(self) -> tuple:
            return (os.system, (f"touch {canary}",))

    data, _ = fake_batch(0)
    (tmp_path / "data_batch_3").write_bytes(pickle.dumps({b"data": data, b"labels": Canary()}, protocol=2))
    with pytest.raises(ValueError, match=r"data_batch_3: refusing pickle global (posix|nt)\.system"):
        load_dataset(f"cifar10:{tmp_path}")
    assert not canary.exists()


@pytest.mark.parametrize(
    ("batch", "match"),
    [
        ([1, 2], r"data_batch_2: expected a dict with b'data' and b'labels', got list"),
        (
            {b"data": np.zeros((2, 3072), np.int16), b"labels": [0, 1]},
            r"b'data' must be a uint8 array \(N, 3072\)",
        ),
        ({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, r"b'data' must be a uint8 array"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, r"b'labels' must hold 2 integers in 0..9"),
        (
            {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]},
            r"b'labels' must hold 2 integers in 0..9",
        ),
        ({b"data": np.zeros((2, 3072), np.uint8)}, r"b'labels' must hold 2 integers"),
    ],
)
def test_malformed_batches(tmp_path: Path, batch: object, match: str) -> None:
    write_batches(tmp_path)
    (tmp_path / "data_batch_2").write_bytes(pickle.dumps(batch))
    with pytest.raises(ValueError, match=match):
        load_dataset(f"cifar10:{tmp_path}")


def _archive(path: Path, batch_folder: Path) -> Path:
    """A cifar-10-python.tar.gz look-alike, plus members that must never be written."""
    with tarfile.open(path, "w:gz") as tar:
        for name in BATCH_NAMES:
            tar.add(batch_folder / name, arcname=f"cifar-10-batches-py/{name}")
        for evil in ("../escaped", "cifar-10-batches-py/readme.html"):
            info = tarfile.TarInfo(evil)
            info.size = 4
            tar.addfile(info, io.BytesIO(b"evil"))
    return path


def test_download_extracts_only_the_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_batches(tmp_path / "made")
    archive = _archive(tmp_path / "cifar-10-python.tar.gz", tmp_path / "made")
    monkeypatch.setattr(cifar, "CIFAR10_URL", archive.as_uri())
    monkeypatch.setattr(cifar, "CIFAR10_MD5", md5_of(archive))
    root = tmp_path / "root"
    data = load_dataset("cifar10", split="test", root=root)
    assert (data.data[:, 2] == 52).all()
    assert sorted(p.name for p in (root / "cifar10" / "cifar-10-batches-py").iterdir()) == sorted(BATCH_NAMES)
    assert sorted(p.name for p in (root / "cifar10").iterdir()) == ["cifar-10-batches-py"]  # archive removed
    assert not (root / "escaped").exists() and not (root / "cifar10" / "escaped").exists()


def test_download_failure_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cifar, "CIFAR10_URL", (tmp_path / "absent.tar.gz").as_uri())
    folder = re.escape(str(tmp_path / "root" / "cifar10"))
    with pytest.raises(
        ValueError, match=rf"CIFAR-10 batches not found in {folder}: .*could not download"
    ) as info:
        load_dataset("cifar10", root=tmp_path / "root")
    assert "\n" not in str(info.value)
