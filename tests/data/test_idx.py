"""MNIST / Fashion-MNIST IDX files: the real MNIST copy, tiny written sets, downloads, bad files."""

from __future__ import annotations

import dataclasses
import gzip
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from ddpm.data import load_dataset
from ddpm.data.idx import IDX_SETS, parse_idx, read_idx
from tests.shared_data import SHARED_DATA

MNIST_DIR = SHARED_DATA / "mnist"
MNIST_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
FOUR_FILES = (
    r"put train-images-idx3-ubyte\.gz, train-labels-idx1-ubyte\.gz, t10k-images-idx3-ubyte\.gz, "
    r"t10k-labels-idx1-ubyte\.gz there \(gzipped or not\)"
)
needs_mnist = pytest.mark.skipif(
    not MNIST_DIR.is_dir(), reason="the shared MNIST copy is not on this machine"
)


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode uint8 data as IDX: 00 00 08 ndim, big-endian dims, values."""
    return bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def write_idx_set(folder: Path, n_train: int = 6, n_test: int = 4, gz: bool = True) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 5, 4), dtype=np.uint8),
        "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 5, 4), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(n_test)[::-1] % 10).astype(np.uint8),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for i, (stem, array) in enumerate(arrays.items()):
        compressed = gz and i % 2 == 0  # a mix of gzipped and raw files
        data = gzip.compress(idx_bytes(array)) if compressed else idx_bytes(array)
        (folder / (f"{stem}.gz" if compressed else stem)).write_bytes(data)
    return arrays


@pytest.fixture(scope="module")
def mnist_test() -> object:
    return load_dataset(f"mnist:{MNIST_DIR}", split="test")


@needs_mnist
def test_mnist_train_from_a_directory() -> None:
    train = load_dataset(f"mnist:{MNIST_DIR}")
    assert train.data.shape == (60000, 1, 28, 28) and train.data.dtype == torch.uint8
    assert train.labels.shape == (60000,) and set(train.labels.unique().tolist()) == set(range(10))
    assert train.class_names == tuple("0123456789") and train.data.is_contiguous()
    assert train.data.max() == 255 and train.data.min() == 0


@needs_mnist
def test_mnist_test_split_and_root_form(tmp_path: Path, mnist_test: object) -> None:
    assert mnist_test.data.shape == (10000, 1, 28, 28)
    assert torch.bincount(mnist_test.labels).tolist() == [
        980,
        1135,
        1032,
        1010,
        982,
        892,
        958,
        1028,
        974,
        1009,
    ]
    (tmp_path / "mnist").mkdir()
    for name in MNIST_FILES:
        (tmp_path / "mnist" / name).symlink_to(MNIST_DIR / name)
    from_root = load_dataset("mnist", split="test", root=tmp_path, download=False)
    assert torch.equal(from_root.data, mnist_test.data) and torch.equal(from_root.labels, mnist_test.labels)
    assert from_root.fingerprint == mnist_test.fingerprint  # names and sizes, not where they live


@needs_mnist
def test_mnist_download_checks_md5_of_decompressed_train_images(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mnist_test: object
) -> None:
    # the shared train-images .gz is re-compressed: only its decompressed md5 matches the original
    mirrors = (f"file://{tmp_path}/no-such-mirror/", MNIST_DIR.as_uri() + "/")
    monkeypatch.setitem(IDX_SETS, "mnist", dataclasses.replace(IDX_SETS["mnist"], mirrors=mirrors))
    data = load_dataset("mnist", split="test", root=tmp_path / "root")
    assert sorted(p.name for p in (tmp_path / "root" / "mnist").iterdir()) == sorted(MNIST_FILES)
    assert torch.equal(data.data, mnist_test.data)


def test_download_failure_names_the_four_files_and_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty_mirror = tmp_path / "mirror"
    empty_mirror.mkdir()
    monkeypatch.setitem(
        IDX_SETS, "mnist", dataclasses.replace(IDX_SETS["mnist"], mirrors=(empty_mirror.as_uri() + "/",))
    )
    folder = tmp_path / "root" / "mnist"
    match = (
        rf"MNIST files not found in {re.escape(str(folder))}: {FOUR_FILES}; could not download train-images"
    )
    with pytest.raises(ValueError, match=match):
        load_dataset("mnist", root=tmp_path / "root")
    assert not any(folder.iterdir())  # no partial files left behind


def test_download_rejects_a_wrong_checksum(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mirror = tmp_path / "mirror"
    write_idx_set(mirror)  # valid IDX files, but not the real Fashion-MNIST
    monkeypatch.setitem(
        IDX_SETS,
        "fashion-mnist",
        dataclasses.replace(IDX_SETS["fashion-mnist"], mirrors=(mirror.as_uri() + "/",)),
    )
    with pytest.raises(
        ValueError, match=r"Fashion-MNIST files not found .*md5 [0-9a-f]{32} does not match 8d4fb7e6"
    ):
        load_dataset("fashion-mnist", root=tmp_path / "root")


@pytest.mark.parametrize("spec_form", ["root", "dir"])
def test_offline_missing_files_error(tmp_path: Path, spec_form: str) -> None:
    (tmp_path / "mnist").mkdir()
    spec = "mnist" if spec_form == "root" else f"mnist:{tmp_path / 'mnist'}"
    folder = re.escape(str(tmp_path / "mnist"))
    with pytest.raises(
        ValueError, match=rf"MNIST files not found in {folder}: {FOUR_FILES}; downloading is off"
    ):
        load_dataset(spec, root=tmp_path, download=False)


def test_fashion_mnist_from_written_files(tmp_path: Path) -> None:
    arrays = write_idx_set(tmp_path / "fashion-mnist")
    train = load_dataset("fashion-mnist", root=tmp_path, download=False)
    assert (
        train.data.shape == (6, 1, 5, 4) and train.class_names[0] == "T-shirt/top" and train.num_classes == 10
    )
    assert np.array_equal(train.data[:, 0].numpy(), arrays["train-images-idx3-ubyte"])
    assert train.labels.tolist() == [0, 1, 2, 3, 4, 5]
    test = load_dataset(f"fashion-mnist:{tmp_path / 'fashion-mnist'}", split="test")
    assert np.array_equal(
        test.data[:, 0].numpy(), arrays["t10k-images-idx3-ubyte"]
    ) and test.labels.tolist() == [3, 2, 1, 0]
    both = load_dataset("fashion-mnist", root=tmp_path, split="all", image_size=4, channels=3)
    assert both.data.shape == (10, 3, 4, 4) and both.labels.tolist() == [0, 1, 2, 3, 4, 5, 3, 2, 1, 0]
    assert len({train.fingerprint, test.fingerprint, both.fingerprint}) == 3


def test_torchvision_raw_folder_and_dotted_names(tmp_path: Path) -> None:
    arrays = write_idx_set(tmp_path / "raw", gz=False)
    for path in (tmp_path / "raw").iterdir():
        path.rename(path.with_name(path.name.replace("-idx", ".idx")))  # "train-images.idx3-ubyte"
    data = load_dataset(f"mnist:{tmp_path}")
    assert np.array_equal(data.data[:, 0].numpy(), arrays["train-images-idx3-ubyte"])


def test_fingerprint_follows_file_sizes(tmp_path: Path) -> None:
    write_idx_set(tmp_path / "a", n_train=6)
    write_idx_set(tmp_path / "b", n_train=6)
    write_idx_set(tmp_path / "c", n_train=7)
    a, b, c = (load_dataset(f"mnist:{tmp_path / name}").fingerprint for name in "abc")
    assert a == b != c


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (b"\x00\x00\x08", r"some\.idx is not an IDX file: header '000008'"),
        (
            b"PK\x03\x04" + bytes(20),
            r"some\.idx is not an IDX file: header '504b0304', expected 0000 \+ type code",
        ),
        (b"\x00\x00\x07\x01" + bytes(8), r"some\.idx is not an IDX file: header '00000701'"),
        (b"\x00\x00\x08\x03\x00\x00", r"some\.idx is a truncated IDX file: 6 bytes, header alone needs 16"),
        (
            idx_bytes(np.zeros((2, 3, 3), np.uint8))[:-1],
            r"some\.idx: IDX header says shape \(2, 3, 3\) \(34 bytes\) but the file has 33",
        ),
    ],
)
def test_bad_idx_bytes(raw: bytes, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse_idx(raw, "some.idx")


def test_idx_types_and_gzip(tmp_path: Path) -> None:
    values = np.array([[1, -2], [300, 4]], dtype=">i4")
    raw = bytes([0, 0, 0x0C, 2]) + struct.pack(">2I", 2, 2) + values.tobytes()
    (tmp_path / "x.gz").write_bytes(gzip.compress(raw))
    assert read_idx(tmp_path / "x.gz").tolist() == [[1, -2], [300, 4]]
    (tmp_path / "broken.gz").write_bytes(gzip.compress(raw)[:-6])
    with pytest.raises(ValueError, match=r"broken.gz is a damaged gzip file"):
        read_idx(tmp_path / "broken.gz")


def test_corrupted_header_in_a_data_set_names_the_file(tmp_path: Path) -> None:
    write_idx_set(tmp_path, gz=False)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(b"\xff\xff\x08\x01" + bytes(8))
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte is not an IDX file: header 'ffff0801'"):
        load_dataset(f"mnist:{tmp_path}", split="test")


@pytest.mark.parametrize(
    ("stem", "array", "match"),
    [
        (
            "train-labels-idx1-ubyte",
            np.array([0, 1, 2], np.uint8),
            r"expected 6 labels in 0..9, got shape \(3,\)",
        ),
        ("train-labels-idx1-ubyte", np.array([0, 1, 2, 3, 4, 10], np.uint8), r"expected 6 labels in 0..9"),
        ("train-images-idx3-ubyte", np.zeros((6, 4), np.uint8), r"expected uint8 images \(N, H, W\)"),
    ],
)
def test_inconsistent_files(tmp_path: Path, stem: str, array: np.ndarray, match: str) -> None:
    write_idx_set(tmp_path, gz=False)
    (tmp_path / stem).write_bytes(idx_bytes(array))
    with pytest.raises(ValueError, match=match):
        load_dataset(f"mnist:{tmp_path}")
