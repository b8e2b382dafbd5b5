"""CIFAR-10 (Krizhevsky 2009) from its python batches, read without unpickling.

Each batch file (``data_batch_1`` … ``data_batch_5``, ``test_batch``) is a pickled dict with
``b"data"``: uint8 (10000, 3072), rows holding the red, green then blue 32×32 planes, and
``b"labels"``: 10,000 ints in 0..9. :mod:`ddpm.data.pickle_reader` reads them as data only.
"""

from __future__ import annotations

import shutil
import tarfile
from pathlib import Path

import numpy as np
import torch

from ddpm.data.dataset import Dataset, fingerprint
from ddpm.data.download import download_file
from ddpm.data.images import conform_images
from ddpm.data.pickle_reader import read_pickle_data

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
BATCH_FOLDER = "cifar-10-batches-py"
SPLIT_BATCHES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def find_batch_folder(directory: Path) -> Path | None:
    """``directory`` itself or its ``cifar-10-batches-py`` sub-folder, whichever holds the batches."""
    for candidate in (directory, directory / BATCH_FOLDER):
        if all((candidate / name).is_file() for names in SPLIT_BATCHES.values() for name in names):
            return candidate
    return None


def missing_message(folder: Path, why: str) -> str:
    names = ", ".join(name for names in SPLIT_BATCHES.values() for name in names)
    return f"CIFAR-10 batches not found in {folder}: put {names} there (from {CIFAR10_URL}); {why}"


def download_batches(folder: Path) -> Path:
    """Download the archive into ``folder`` and extract the six batch files (and only those)."""
    archive = download_file([CIFAR10_URL], folder / CIFAR10_ARCHIVE, md5=CIFAR10_MD5)
    target = folder / BATCH_FOLDER
    target.mkdir(parents=True, exist_ok=True)
    wanted = {name for names in SPLIT_BATCHES.values() for name in names}
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            name = Path(member.name).name
            if member.isfile() and name in wanted:
                # copy by basename: no member path ever reaches the file system
                with tar.extractfile(member) as source, open(target / f".{name}.part", "wb") as out:
                    shutil.copyfileobj(source, out)
                (target / f".{name}.part").replace(target / name)
    archive.unlink()
    return target


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (N, 3, 32, 32) images and int64 (N,) labels from one batch file."""
    batch = read_pickle_data(path.read_bytes(), str(path))
    if not isinstance(batch, dict):
        raise ValueError(f"{path}: expected a dict with b'data' and b'labels', got {type(batch).__name__}")
    data = batch.get(b"data", batch.get("data"))
    labels = batch.get(b"labels", batch.get("labels"))
    if not (
        isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2 and data.shape[1] == 3072
    ):
        raise ValueError(f"{path}: b'data' must be a uint8 array (N, 3072)")
    labels = np.asarray(labels if isinstance(labels, (list, np.ndarray)) else [], dtype=np.int64)
    if labels.shape != (len(data),) or not np.isin(labels, np.arange(10)).all():
        raise ValueError(f"{path}: b'labels' must hold {len(data)} integers in 0..9")
    return data.reshape(-1, 3, 32, 32), labels  # row = R plane, G plane, B plane


def load_cifar10(
    spec: str,
    directory: Path | None,
    root: Path,
    split: str,
    image_size: int | None,
    channels: int | None,
    download: bool,
) -> Dataset:
    """Images (N, 3, 32, 32) uint8 and labels 0..9; split "train" (50,000), "test" (10,000) or "all"."""
    search = directory if directory is not None else root / "cifar10"
    folder = find_batch_folder(search)
    if folder is None:
        if directory is not None or not download:
            raise ValueError(
                missing_message(search, "downloading is off (download=False or an explicit DIR)")
            )
        try:
            folder = download_batches(search)
        except (OSError, tarfile.TarError) as error:  # DownloadError is an OSError
            raise ValueError(missing_message(search, str(error))) from None
    names = [
        name for part in (("train", "test") if split == "all" else (split,)) for name in SPLIT_BATCHES[part]
    ]
    batches = [read_batch(folder / name) for name in names]
    images = conform_images(np.concatenate([images for images, _ in batches]), image_size, channels)
    return Dataset(
        spec=spec,
        kind="images",
        data=torch.from_numpy(images),
        labels=torch.from_numpy(np.concatenate([labels for _, labels in batches])),
        class_names=CIFAR10_CLASSES,
        fingerprint=fingerprint(
            "cifar10", split, image_size, channels, [(name, (folder / name).stat().st_size) for name in names]
        ),
    )
