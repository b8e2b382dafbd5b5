"""The size of a folder's images from one image's header: ``ddpm train`` picks its default recipe by it
(issue 20) without reading the folder, which for a large archive takes minutes.

The size is the shorter side of the first image whose header PIL reads (files in sorted order in a
directory, in stored order in an archive), as the folder loader resizes the shorter side to the
training size. Only headers are read: ``Image.open`` decodes no pixels, and a tar is read no further
than that image's member, and never past its first 16 MiB (a bomb is the loader's to refuse).
"""

from __future__ import annotations

import os
import tarfile
import warnings
import zipfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from itertools import islice
from pathlib import Path
from typing import IO

from PIL import Image

from ddpm.data.folder import IMAGE_SUFFIXES
from ddpm.data.sources import ARCHIVE_ERRORS, ZIP_METHODS, is_hidden

PROBE_TRIES = 20  # image files tried before the size is called unknown
PROBE_MAX_BYTES = 16 * 1024**2  # a tar is decompressed at most this far looking for an image
MAX_MEMBERS = 10_000  # archive members looked at for an image

Opener = Callable[[], AbstractContextManager[IO[bytes]]]


def first_image_side(path: str | Path, tries: int = PROBE_TRIES) -> int | None:
    """The shorter side, in pixels, of the first image under ``path`` (a directory, .tar* or .zip) whose
    header can be read; None where there is none among the first ``tries`` image files or the first
    :data:`PROBE_MAX_BYTES` of a tar, or ``path`` is no folder or archive. The probe refuses nothing:
    loading the folder says what is wrong with it, bombs included, as it always has."""
    path = Path(path).expanduser()
    if not (path.is_dir() or path.is_file()):
        return None
    try:
        for opener in islice(_candidates(path), tries):
            side = _shorter_side(opener)
            if side is not None:
                return side
    except ARCHIVE_ERRORS:  # a damaged archive or an unreadable folder: loading it says so
        return None
    return None


def _shorter_side(opener: Opener) -> int | None:
    try:
        with warnings.catch_warnings(), opener() as stream:
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # only the header is read
            with Image.open(stream) as image:
                return min(image.size)
    except Exception:  # PIL raises many exception types for damaged files; the loader reports them
        return None


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES) and not is_hidden(name)


def _candidates(path: Path) -> Iterator[Opener]:
    """Openers of the image files under ``path``, first ones first."""
    if path.is_dir():
        yield from _directory_images(path)
    elif zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            for info in islice(archive.infolist(), MAX_MEMBERS):
                if not info.is_dir() and _is_image(info.filename) and info.compress_type in ZIP_METHODS:
                    yield lambda info=info: archive.open(info)
    elif tarfile.is_tarfile(path):
        with tarfile.open(path, "r:*") as archive:
            for _ in range(MAX_MEMBERS):
                member = archive.next()  # decompresses the stream up to this member's header
                if member is None:
                    return
                if member.isfile() and _is_image(member.name):
                    yield lambda member=member: _tar_member(archive, member)
                if member.offset_data + member.size > PROBE_MAX_BYTES:
                    return  # the next header lies beyond what the probe reads


def _tar_member(archive: tarfile.TarFile, member: tarfile.TarInfo) -> AbstractContextManager[IO[bytes]]:
    stream = archive.extractfile(member)
    assert stream is not None  # a regular file always has a stream
    return stream


def _directory_images(root: Path, folder: Path | None = None) -> Iterator[Opener]:
    """The image files under ``root`` in the order of their sorted relative names, depth first."""
    with os.scandir(folder or root) as scan:
        entries = sorted(scan, key=lambda entry: entry.name)
    for entry in entries:
        path = Path(entry.path)
        relative = path.relative_to(root).as_posix()
        if is_hidden(entry.name):
            continue
        if entry.is_dir():
            yield from _directory_images(root, path)
        elif _is_image(relative) and entry.is_file():
            yield lambda path=path: open(path, "rb")  # noqa: SIM115 (the caller closes it)
