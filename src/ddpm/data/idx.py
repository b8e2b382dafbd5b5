"""MNIST and Fashion-MNIST from their IDX files (LeCun et al. 1998; Xiao, Rasul, Vollgraf 2017).

IDX layout: two zero bytes, a type code, the number of dimensions, then each dimension as a
big-endian uint32, then the values in C order, big-endian. Files may be gzipped or not.
"""

from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ddpm.data.dataset import Dataset, fingerprint
from ddpm.data.download import download_file
from ddpm.data.images import conform_images

IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
SPLIT_FILES = {  # split → (images, labels), without ".gz"
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
ALL_FILES = tuple(f"{stem}.gz" for pair in SPLIT_FILES.values() for stem in pair)


@dataclass(frozen=True)
class IdxSet:
    title: str  # for messages
    folder: str  # sub-folder of the data root
    mirrors: tuple[str, ...]  # base URLs tried in order
    md5: dict[str, tuple[str, str | None]]  # "x.gz" → (md5 of the .gz, md5 of its decompressed bytes)
    class_names: tuple[str, ...]


IDX_SETS: dict[str, IdxSet] = {
    "mnist": IdxSet(
        "MNIST",
        "mnist",
        ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
        {
            "train-images-idx3-ubyte.gz": (
                "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                "6bbc9ace898e44ae57da46a324031adb",
            ),
            "train-labels-idx1-ubyte.gz": ("d53e105ee54ea40749a09fcbcd1e9432", None),
            "t10k-images-idx3-ubyte.gz": ("9fb629c4189551a2d022fa330f9573f3", None),
            "t10k-labels-idx1-ubyte.gz": ("ec29112dd5afa0611ce80d1b7f02629c", None),
        },
        tuple(str(d) for d in range(10)),
    ),
    "fashion-mnist": IdxSet(
        "Fashion-MNIST",
        "fashion-mnist",
        ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        {
            "train-images-idx3-ubyte.gz": ("8d4fb7e6c68d591d4c3dfef9ec88bf0d", None),
            "train-labels-idx1-ubyte.gz": ("25c81989df183df01b3e8a0aad5dffbe", None),
            "t10k-images-idx3-ubyte.gz": ("bef4ecab320f06d8554ea6380940ec79", None),
            "t10k-labels-idx1-ubyte.gz": ("bb300cfdad3c16e7a12a480ee83cd310", None),
        },
        (
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
    ),
}


def parse_idx(raw: bytes, source: str) -> np.ndarray:
    """Decode IDX bytes into an array of the declared type and shape (native byte order)."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_TYPES or raw[3] == 0:
        raise ValueError(
            f"{source} is not an IDX file: header {raw[:4].hex()!r}, expected 0000 + type code "
            f"({', '.join(f'{code:02x}' for code in IDX_TYPES)}) + number of dimensions"
        )
    ndim, dtype = raw[3], np.dtype(IDX_TYPES[raw[2]])
    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise ValueError(
            f"{source} is a truncated IDX file: {len(raw)} bytes, header alone needs {header_size}"
        )
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    expected = header_size + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(
            f"{source}: IDX header says shape {shape} ({expected} bytes) but the file has {len(raw)}"
        )
    return np.frombuffer(raw, dtype, offset=header_size).reshape(shape).astype(dtype.newbyteorder("="))


def read_idx(path: Path) -> np.ndarray:
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":  # gzip magic, whatever the file is called
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as error:
            raise ValueError(f"{path} is a damaged gzip file: {error}") from None
    return parse_idx(raw, str(path))


def find_idx_file(folder: Path, stem: str) -> Path | None:
    """``stem`` or ``stem.gz`` in ``folder`` or ``folder/raw`` (torchvision's layout); also "x.idx3-ubyte"."""
    for directory in (folder, folder / "raw"):
        for name in (stem, stem.replace("-idx", ".idx")):
            for suffix in ("", ".gz"):
                if (directory / f"{name}{suffix}").is_file():
                    return directory / f"{name}{suffix}"
    return None


def missing_message(info: IdxSet, folder: Path, why: str) -> str:
    return (
        f"{info.title} files not found in {folder}: put {', '.join(ALL_FILES)} there (gzipped or not); {why}"
    )


def locate_idx_files(info: IdxSet, folder: Path, can_download: bool) -> dict[str, Path]:
    """stem → path for the four files, downloading the missing ones into ``folder`` if allowed."""
    found = {stem: find_idx_file(folder, stem) for pair in SPLIT_FILES.values() for stem in pair}
    missing = [stem for stem, path in found.items() if path is None]
    if missing and not can_download:
        raise ValueError(
            missing_message(info, folder, "downloading is off (download=False or an explicit DIR)")
        )
    for stem in missing:
        name = f"{stem}.gz"
        try:
            found[stem] = download_file(
                [base + name for base in info.mirrors],
                folder / name,
                md5=info.md5[name][0],
                gunzipped_md5=info.md5[name][1],
            )
        except OSError as error:  # DownloadError, or the folder cannot be created
            raise ValueError(missing_message(info, folder, str(error))) from None
    return found  # type: ignore[return-value]


def load_idx_dataset(
    spec: str,
    name: str,
    directory: Path | None,
    root: Path,
    split: str,
    image_size: int | None,
    channels: int | None,
    download: bool,
) -> Dataset:
    """Images (N, 1, 28, 28) uint8 and labels 0..9; split "train" (60,000), "test" (10,000) or "all"."""
    info = IDX_SETS[name]
    folder = directory if directory is not None else root / info.folder
    paths = locate_idx_files(info, folder, can_download=download and directory is None)
    splits = ("train", "test") if split == "all" else (split,)
    images, labels = [], []
    for part in splits:
        image_path, label_path = (paths[stem] for stem in SPLIT_FILES[part])
        part_images, part_labels = read_idx(image_path), read_idx(label_path)
        if part_images.ndim != 3 or part_images.dtype != np.uint8:
            raise ValueError(
                f"{image_path}: expected uint8 images (N, H, W), got {part_images.dtype} {part_images.shape}"
            )
        if part_labels.shape != (len(part_images),) or not np.isin(part_labels, np.arange(10)).all():
            raise ValueError(
                f"{label_path}: expected {len(part_images)} labels in 0..9, got shape {part_labels.shape}"
            )
        images.append(part_images)
        labels.append(part_labels.astype(np.int64))
    used = [paths[stem] for part in splits for stem in SPLIT_FILES[part]]
    return Dataset(
        spec=spec,
        kind="images",
        data=torch.from_numpy(conform_images(np.concatenate(images)[:, None], image_size, channels)),
        labels=torch.from_numpy(np.concatenate(labels)),
        class_names=info.class_names,
        fingerprint=fingerprint(
            name, split, image_size, channels, sorted((path.name, path.stat().st_size) for path in used)
        ),
    )
