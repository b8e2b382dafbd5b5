"""Images from a directory, a .tar or a .zip; class sub-folders give labels.

Layout rules, applied to the image files only (hidden files and other files are ignored, and
listed in ``Dataset.skipped`` with the reason "… (ignored)"):

1. Leading folders shared by every image are looked through (``test.tar`` → ``test/<class>/x.jpg``).
2. If what remains is exactly two folders ``train/`` and ``test/``, ``split`` picks one ("all": both)
   and classes are the folders inside them, named the same in both; otherwise the whole folder is
   one set of images, returned for every split.
3. Each first-level folder is a class (deeper folders belong to it); class names are sorted, so the
   label of a class is its index in that order. Images directly at the top give an unlabelled set;
   mixing the two is an error.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch

from ddpm.data.dataset import Dataset, SkippedFile, fingerprint
from ddpm.data.images import ImageRefused, decode_image
from ddpm.data.sources import DEFAULT_MAX_ARCHIVE_BYTES, ArchiveRefused, FileSource

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
DEFAULT_IMAGE_SIZE = 32
SPLIT_FOLDERS = ("train", "test")
MAX_FILE_BYTES = 512 * 1024 * 1024  # an image file larger than this is skipped unread (memory bound)
IGNORED = "(ignored)"  # ends the reason of a skipped file that was never a candidate image


@dataclass(frozen=True)
class FolderLayout:
    names: tuple[str, ...]  # the selected image files, sorted
    classes: tuple[str | None, ...]  # class folder of each selected file
    class_names: tuple[str, ...] | None  # sorted, over every split; None when unlabelled
    split: str  # the split served: the requested one with train/ + test/ folders, else "all"


def folder_layout(names: list[str], split: str, where: Path) -> FolderLayout:
    """Apply the module's layout rules to sorted image names."""
    parts = [PurePosixPath(name).parts for name in names]
    depth = 0  # leading folders shared by every image
    while all(len(p) > depth + 1 for p in parts) and len({p[depth] for p in parts}) == 1:
        depth += 1
    relative = [p[depth:] for p in parts]
    split_folders = all(len(r) > 1 for r in relative) and {r[0] for r in relative} == set(SPLIT_FOLDERS)
    level = 1 if split_folders else 0
    classes = [r[level] if len(r) > level + 1 else None for r in relative]
    if None in classes and any(c is not None for c in classes):
        loose = names[classes.index(None)]
        raise ValueError(
            f"folder {where} mixes images outside class folders ({loose}) with class folders; "
            "put every image in a class folder, or none"
        )
    served = split if split_folders else "all"
    keep = [served == "all" or r[0] == served for r in relative]
    class_names = tuple(sorted({c for c in classes if c is not None})) or None
    return FolderLayout(
        names=tuple(n for n, k in zip(names, keep, strict=True) if k),
        classes=tuple(c for c, k in zip(classes, keep, strict=True) if k),
        class_names=class_names,
        split=served,
    )


def load_folder(
    spec: str,
    path: Path,
    split: str,
    image_size: int | None,
    channels: int | None,
    *,
    max_archive_bytes: int = DEFAULT_MAX_ARCHIVE_BYTES,
) -> Dataset:
    """Decode every image to uint8 (channels, size, size): resize shorter side + centre crop.

    ``image_size`` defaults to 32 and ``channels`` to 3 (RGB; 1 gives grey). Unreadable images are
    skipped, listed in ``Dataset.skipped`` and reported in one warning; so are, marked "(ignored)",
    hidden files and files without an image suffix. See :func:`report_skipped`. An archive that
    would expand past ``max_archive_bytes`` (or 100× its size), or whose zip entries overlap, is
    refused with ValueError before its contents are read (see :mod:`ddpm.data.sources`).
    """
    size = DEFAULT_IMAGE_SIZE if image_size is None else image_size
    channels = 3 if channels is None else channels
    with FileSource(path, max_archive_bytes=max_archive_bytes) as source:
        return _load(source, spec, path, split, size, channels)


def _load(source: FileSource, spec: str, path: Path, split: str, size: int, channels: int) -> Dataset:
    entries = source.entries()
    ignored = [SkippedFile(name, f"hidden {IGNORED}") for name in source.hidden] + [
        SkippedFile(
            entry.name, f"suffix {PurePosixPath(entry.name).suffix!r} is not an image suffix {IGNORED}"
        )
        for entry in entries
        if not entry.name.lower().endswith(IMAGE_SUFFIXES)
    ]
    sizes = {entry.name: entry.size for entry in entries if entry.name.lower().endswith(IMAGE_SUFFIXES)}
    if not sizes:
        raise ValueError(f"folder {path} has no images; looked for {', '.join(IMAGE_SUFFIXES)}")
    layout = folder_layout(sorted(sizes), split, path)
    row = {name: i for i, name in enumerate(layout.names)}
    images = np.empty((len(row), channels, size, size), dtype=np.uint8)  # filled in archive order
    readable = np.zeros(len(row), dtype=bool)
    skipped = [SkippedFile(name, _size_problem(sizes[name])) for name in row if _size_problem(sizes[name])]
    wanted = set(row) - {s.name for s in skipped}
    for name, data in source.read_all(wanted):
        try:
            if isinstance(data, Exception):
                raise data
            images[row[name]] = decode_image(data, size, channels)
            readable[row[name]] = True
        except (ImageRefused, ArchiveRefused) as error:
            skipped.append(SkippedFile(name, str(error)))
        except Exception as error:  # PIL's decoders raise many exception types for damaged files
            skipped.append(SkippedFile(name, f"{type(error).__name__}: {error}"))
    skipped.sort(key=lambda s: s.name)
    if not readable.any():
        raise ValueError(
            f"folder {path} has no readable images: all {len(row)} failed, e.g. {_describe(skipped)}"
        )
    if skipped:
        warnings.warn(
            f"skipped {len(skipped)} unreadable image(s) in {path}, e.g. {_describe(skipped)}; "
            "see Dataset.skipped",
            stacklevel=4,  # _load → load_folder → load_dataset → the caller
        )
    labels = None
    if layout.class_names is not None:
        index = {name: i for i, name in enumerate(layout.class_names)}
        labels = torch.tensor([index[c] for c, ok in zip(layout.classes, readable, strict=True) if ok])
    return Dataset(
        spec=spec,
        kind="images",
        data=torch.from_numpy(images if readable.all() else images[readable]),
        labels=labels,
        class_names=layout.class_names,
        fingerprint=fingerprint(
            "folder", layout.split, size, channels, [(n, sizes[n]) for n in layout.names]
        ),
        skipped=tuple(sorted(skipped + ignored, key=lambda s: s.name)),
        names=tuple(name for name, ok in zip(layout.names, readable, strict=True) if ok),
    )


def _size_problem(size: int) -> str:
    """Why a file of ``size`` bytes is skipped without reading it, or ""."""
    if size == 0:
        return "empty file (0 bytes)"
    if size > MAX_FILE_BYTES:
        return f"{size} bytes is over the {MAX_FILE_BYTES}-byte limit for one image file; not read"
    return ""


def unusable_images(skipped: Sequence[SkippedFile]) -> list[SkippedFile]:
    """The skipped files that were meant as images (not hidden or other files)."""
    return [s for s in skipped if not s.reason.endswith(IGNORED)]


def report_skipped(dataset: Dataset, *, strict: bool = False, log: Callable[[str], Any] = print) -> None:
    """Say once, with its reason, each file the loader passed over; with ``strict``, refuse instead.

    Strict mode raises ValueError when any image file was unusable (hidden and non-image files
    never count), so a run can refuse to start on a data set that is not what it should be.
    """
    bad = unusable_images(dataset.skipped)
    if strict and bad:
        raise ValueError(
            f"data {dataset.spec!r} has {len(bad)} unusable image file(s), "
            f"e.g. {bad[0].name} ({bad[0].reason}); fix or remove them, "
            "or train without --strict-data (data.strict = false)"
        )
    for item in dataset.skipped:
        log(f"data: skipped {item.name}: {item.reason}")
    if dataset.skipped:
        log(
            f"data: training on {len(dataset)} images; skipped {len(bad)} unusable image file(s) "
            f"and ignored {len(dataset.skipped) - len(bad)} other file(s)"
        )


def _describe(skipped: list[SkippedFile]) -> str:
    return f"{skipped[0].name} ({skipped[0].reason})" if skipped else "none"
