"""Image folders: the CIFAR-10 JPEG tar, written directories / zips / tars, layout rules, fingerprints."""

from __future__ import annotations

import io
import os
import tarfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ddpm.data import load_dataset
from ddpm.data.folder import unusable_images
from ddpm.data.images import luma
from tests.shared_data import SHARED_DATA

CIFAR_TEST_TAR = SHARED_DATA / "cifar10-jpeg" / "test.tar"
CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def _rgb(seed: int, height: int = 12, width: int = 12) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def write_tree(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def mixed_tree() -> dict[str, bytes]:
    """Two classes; RGB, RGBA, grey, non-square and nested images; a broken JPEG; files to ignore."""
    rgba = np.zeros((12, 12, 4), dtype=np.uint8)
    rgba[..., 3] = 0  # fully transparent: composited on white
    jpeg = io.BytesIO()
    Image.fromarray(np.full((12, 12), 40, np.uint8)).save(jpeg, "JPEG")
    bmp = io.BytesIO()
    Image.fromarray(_rgb(2, 20, 40)).save(bmp, "BMP")
    return {
        "cat/a.png": _png(_rgb(1)),
        "cat/b.png": _png(rgba),
        "dog/c.jpg": jpeg.getvalue(),
        "dog/deeper/d.bmp": bmp.getvalue(),  # non-square; deeper folders belong to their class
        "dog/broken.jpg": b"\xff\xd8 this is not a jpeg",
        "notes.txt": b"not an image",
        "cat/.hidden.png": _png(_rgb(3)),
        ".thumbnails/e.png": _png(_rgb(4)),
        "__MACOSX/cat/._a.png": b"resource fork",
    }


def zip_of(folder: Path, path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for file in sorted(folder.rglob("*")):
            if file.is_file():
                archive.write(file, file.relative_to(folder).as_posix())
    return path


@pytest.mark.skipif(
    not CIFAR_TEST_TAR.is_file(), reason="the shared CIFAR-10 JPEG tar is not on this machine"
)
def test_cifar10_jpeg_test_tar() -> None:
    data = load_dataset(f"folder:{CIFAR_TEST_TAR}")
    assert data.data.shape == (10000, 3, 32, 32) and data.data.dtype == torch.uint8
    assert data.class_names == CIFAR_CLASSES and data.skipped == ()
    assert torch.bincount(data.labels).tolist() == [1000] * 10
    with tarfile.open(CIFAR_TEST_TAR) as tar:  # rows are sorted by name: test/airplane/<first>.jpg first
        first = sorted(m.name for m in tar.getmembers() if m.name.endswith(".jpg"))[0]
        expected = np.asarray(Image.open(tar.extractfile(first)).convert("RGB")).transpose(2, 0, 1)
    assert first.startswith("test/airplane/") and np.array_equal(data.data[0].numpy(), expected)


def test_directory_with_classes_skips_what_it_should(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "pets", mixed_tree())
    with pytest.warns(
        UserWarning, match=r"skipped 1 unreadable image\(s\) in .*pets, e\.g\. dog/broken\.jpg \("
    ):
        data = load_dataset(f"folder:{root}", image_size=8)
    assert data.data.shape == (4, 3, 8, 8) and data.class_names == ("cat", "dog")
    assert data.labels.tolist() == [0, 0, 1, 1]  # cat/a, cat/b, dog/c, dog/deeper/d
    assert data.names == ("cat/a.png", "cat/b.png", "dog/c.jpg", "dog/deeper/d.bmp")  # broken.jpg left out
    assert [s.name for s in unusable_images(data.skipped)] == ["dog/broken.jpg"]
    assert "not an image PIL can read" in unusable_images(data.skipped)[0].reason
    ignored = [s.name for s in data.skipped if s.reason.endswith("(ignored)")]
    assert ignored == [".thumbnails/", "__MACOSX/", "cat/.hidden.png", "notes.txt"]  # each reported once
    assert (data.data[1] == 255).all()  # transparent PNG → white
    assert (data.data[2] == data.data[2, 0, 0, 0]).all()  # grey JPEG → equal RGB channels
    batch = data.batch(torch.arange(4))
    assert batch.min() >= -1 and batch.max() <= 1


def test_zip_and_tar_give_what_the_directory_gives(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "pets", mixed_tree())
    with tarfile.open(tmp_path / "pets.tar.gz", "w:gz") as tar:
        tar.add(root, arcname="pets")  # a single top-level folder is looked through
    with pytest.warns(UserWarning):
        from_dir = load_dataset(f"folder:{root}", image_size=8)
    fingerprints = []
    for archive in (zip_of(root, tmp_path / "pets.zip"), tmp_path / "pets.tar.gz"):
        with pytest.warns(UserWarning, match=r"dog/broken\.jpg"):
            data = load_dataset(f"folder:{archive}", image_size=8)
        assert torch.equal(data.data, from_dir.data) and torch.equal(data.labels, from_dir.labels)
        assert data.class_names == from_dir.class_names
        fingerprints.append(data.fingerprint)
    # same names and sizes → same fingerprint; the tar's wrapper folder is part of its names
    assert fingerprints[0] == from_dir.fingerprint != fingerprints[1]


def test_grey_channels_and_default_size(tmp_path: Path) -> None:
    pixels = _rgb(5, 32, 32)
    root = write_tree(tmp_path / "x", {"a.png": _png(pixels), "b.png": _png(_rgb(6, 64, 48))})
    grey = load_dataset(f"folder:{root}", channels=1)
    assert grey.data.shape == (2, 1, 32, 32) and grey.labels is None and grey.class_names is None
    assert np.array_equal(grey.data[0].numpy(), luma(pixels.transpose(2, 0, 1)[None])[0])
    rgb = load_dataset(f"folder:{root}")
    assert rgb.data.shape == (2, 3, 32, 32) and np.array_equal(rgb.data[0].numpy(), pixels.transpose(2, 0, 1))
    assert grey.fingerprint != rgb.fingerprint != load_dataset(f"folder:{root}", image_size=16).fingerprint


def test_train_and_test_folders_select_the_split(tmp_path: Path) -> None:
    files = {
        "data/train/cat/1.png": _png(_rgb(1)),
        "data/train/cat/2.png": _png(_rgb(2)),
        "data/test/cat/3.png": _png(_rgb(3)),
        "data/test/dog/4.png": _png(_rgb(4)),
    }
    archive = zip_of(write_tree(tmp_path / "t", files), tmp_path / "t.zip")
    train = load_dataset(f"folder:{archive}", image_size=12)
    test = load_dataset(f"folder:{archive}", split="test", image_size=12)
    both = load_dataset(f"folder:{archive}", split="all", image_size=12)
    assert train.class_names == test.class_names == ("cat", "dog")  # classes of both splits, same indices
    assert (len(train), len(test), len(both)) == (2, 2, 4)
    assert train.labels.tolist() == [0, 0] and test.labels.tolist() == [0, 1]
    assert np.array_equal(test.data[1].numpy(), _rgb(4).transpose(2, 0, 1))
    assert len({train.fingerprint, test.fingerprint, both.fingerprint}) == 3


def test_a_folder_without_split_folders_serves_every_split(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "x", {"a/1.png": _png(_rgb(1)), "b/2.png": _png(_rgb(2))})
    train, test = load_dataset(f"folder:{root}"), load_dataset(f"folder:{root}", split="test")
    assert torch.equal(train.data, test.data) and train.fingerprint == test.fingerprint


def test_fingerprint_follows_names_and_sizes(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "x", {"cat/a.png": _png(_rgb(1)), "dog/b.png": _png(_rgb(2))})
    first = load_dataset(f"folder:{root}").fingerprint
    (root / "notes.txt").write_text("ignored")  # not an image: the data do not change
    later = time.time() + 10
    for file in root.rglob("*.png"):
        os.utime(file, (later, later))  # a newer mtime alone changes nothing
    assert load_dataset(f"folder:{root}").fingerprint == first
    (root / "dog" / "c.png").write_bytes(_png(_rgb(3)))
    added = load_dataset(f"folder:{root}").fingerprint
    assert added != first
    (root / "dog" / "c.png").write_bytes(_png(_rgb(3, 16, 16)))  # same name, new size
    assert load_dataset(f"folder:{root}").fingerprint not in (first, added)


def test_errors(tmp_path: Path) -> None:
    empty = write_tree(tmp_path / "empty", {"readme.txt": b"x", ".hidden.png": _png(_rgb(1))})
    with pytest.raises(ValueError, match=r"folder .*empty has no images; looked for \.png, \.jpg"):
        load_dataset(f"folder:{empty}")
    broken = write_tree(tmp_path / "broken", {"a.png": b"nope", "b.jpg": b"nope"})
    with pytest.raises(
        ValueError, match=r"folder .*broken has no readable images: all 2 failed, e\.g\. a\.png \("
    ):
        load_dataset(f"folder:{broken}")
    mixed = write_tree(tmp_path / "mixed", {"loose.png": _png(_rgb(1)), "cat/a.png": _png(_rgb(2))})
    with pytest.raises(ValueError, match=r"folder .*mixed mixes images outside class folders \(loose\.png\)"):
        load_dataset(f"folder:{mixed}")
    archive = tmp_path / "damaged.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(write_tree(tmp_path / "many", {f"{i}.png": _png(_rgb(i, 64, 64)) for i in range(8)}), "many")
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(ValueError, match=r"folder path .*damaged\.tar\.gz cannot be listed: EOFError"):
        load_dataset(f"folder:{archive}")
    (tmp_path / "photo.png").write_bytes(_png(_rgb(1)))
    with pytest.raises(
        ValueError, match=r"folder path .*photo\.png is not a directory, a tar archive or a zip"
    ):
        load_dataset(f"folder:{tmp_path / 'photo.png'}")


def test_a_single_class_folder_is_unlabelled(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "x", {"only/a.png": _png(_rgb(1)), "only/b.png": _png(_rgb(2))})
    data = load_dataset(f"folder:{root}", image_size=12)
    assert data.labels is None and len(data) == 2
