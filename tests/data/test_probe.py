"""A folder's image size from one image's header (issue 20): directories, tars and zips, the first readable
image, one-line errors for folders without one."""

from __future__ import annotations

import io
import tarfile
import zipfile

import numpy as np
import pytest
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


def test_folders_without_a_readable_image_are_refused_in_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"^folder .*empty has no images; looked for \.png, \.jpg"):
        first_image_side(tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    for i in range(3):
        (tmp_path / "bad" / f"{i}.png").write_bytes(b"not a png")
    with pytest.raises(
        ValueError,
        match=r"^folder .*bad has no image with a readable header among its first 3 \(e\.g\. 0\.png: ",
    ):
        first_image_side(tmp_path / "bad")
    with pytest.raises(ValueError, match=r"^data path '.*nowhere' does not exist$"):
        first_image_side(tmp_path / "nowhere")
    (tmp_path / "photo.txt").write_text("text")
    with pytest.raises(
        ValueError, match=r"^folder path .*photo\.txt is not a directory, a tar archive or a zip"
    ):
        first_image_side(tmp_path / "photo.txt")
