"""A folder's image size from one image's header (issue 20): directories, tars and zips, the first readable
image, one-line errors for folders without one."""

from __future__ import annotations

import io
import tarfile
import zipfile

import numpy as np
from PIL import Image

from ddpm.data.probe import first_image_side


def image_bytes(width: int, height: int, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((height, width, 3), dtype=np.uint8)).save(buffer, format=fmt)
    return buffer.getvalue()


def test_a_directory_gives_the_shorter_side_of_its_first_image_and_skips_what_is_no_image(tmp_path):
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "a.png").write_bytes(image_bytes(8, 8))
    (tmp_path / "a_notes.txt").write_text("not an image")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "0.jpg").write_bytes(b"broken")  # tried, then passed over
    (tmp_path / "b" / "1.jpg").write_bytes(image_bytes(96, 72, "JPEG"))
    (tmp_path / "c.png").write_bytes(image_bytes(16, 16))
    assert first_image_side(tmp_path) == 72


def test_tar_and_zip_archives_are_read_no_further_than_their_first_image(tmp_path):
    members = {"photos/readme.md": b"# hi", "photos/x.png": image_bytes(48, 64), "photos/y.png": b"late"}
    with tarfile.open(tmp_path / "p.tar.gz", "w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    with zipfile.ZipFile(tmp_path / "p.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    assert first_image_side(tmp_path / "p.tar.gz") == first_image_side(tmp_path / "p.zip") == 48


def test_no_size_where_no_image_header_is_found_early_the_loader_then_says_why(tmp_path):
    (tmp_path / "empty").mkdir()
    assert first_image_side(tmp_path / "empty") is None
    (tmp_path / "bad").mkdir()
    for i in range(3):
        (tmp_path / "bad" / f"{i}.png").write_bytes(b"not a png")
    (tmp_path / "bad" / "3.png").write_bytes(image_bytes(40, 40))
    assert first_image_side(tmp_path / "bad", tries=3) is None and first_image_side(tmp_path / "bad") == 40
    assert first_image_side(tmp_path / "nowhere") is None
    (tmp_path / "notes.txt").write_text("text")
    assert first_image_side(tmp_path / "notes.txt") is None
    with tarfile.open(tmp_path / "cut.tar", "w") as archive:  # then cut inside its first member's data
        for name, data in (("a.txt", bytes(10_000)), ("b.png", image_bytes(8, 8))):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    (tmp_path / "cut.tar").write_bytes((tmp_path / "cut.tar").read_bytes()[:2000])
    assert first_image_side(tmp_path / "cut.tar") is None


def test_a_tar_is_not_decompressed_past_16_mib_looking_for_an_image(tmp_path):
    with tarfile.open(tmp_path / "late.tar", "w") as archive:
        for name, data in (("video.mp4", bytes(17 * 1024**2)), ("x.png", image_bytes(64, 64))):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    assert first_image_side(tmp_path / "late.tar") is None
