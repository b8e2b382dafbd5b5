"""download_file over file:// URLs: mirror fallback, md5 of the file or of its decompressed bytes."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import pytest

from ddpm.data.download import DownloadError, download_file


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def test_falls_back_to_the_next_mirror_and_verifies(tmp_path: Path) -> None:
    (tmp_path / "good").mkdir()
    (tmp_path / "good" / "f.bin").write_bytes(b"payload")
    urls = [(tmp_path / "missing" / "f.bin").as_uri(), (tmp_path / "good" / "f.bin").as_uri()]
    dest = download_file(urls, tmp_path / "out" / "f.bin", md5=_md5(b"payload"))
    assert dest.read_bytes() == b"payload"
    assert sorted(p.name for p in dest.parent.iterdir()) == ["f.bin"]  # no temporary file left


def test_decompressed_md5_accepts_a_recompressed_file(tmp_path: Path) -> None:
    content = b"original bytes" * 100
    (tmp_path / "x.gz").write_bytes(
        gzip.compress(content, compresslevel=1)
    )  # differs from the "original" .gz
    dest = download_file(
        [(tmp_path / "x.gz").as_uri()], tmp_path / "out" / "x.gz", md5="0" * 32, gunzipped_md5=_md5(content)
    )
    assert gzip.decompress(dest.read_bytes()) == content


def test_every_failure_is_reported_and_nothing_is_left(tmp_path: Path) -> None:
    (tmp_path / "bad.bin").write_bytes(b"tampered")
    urls = [(tmp_path / "bad.bin").as_uri(), (tmp_path / "gone.bin").as_uri(), "notascheme://x"]
    match = (
        r"could not download f\.bin: file://.*bad\.bin: md5 [0-9a-f]{32} does not match 0{32}; "
        r"file://.*gone\.bin: .*; notascheme://x: .*unknown url type"
    )
    with pytest.raises(DownloadError, match=match) as info:
        download_file(urls, tmp_path / "out" / "f.bin", md5="0" * 32)
    assert "\n" not in str(info.value)
    assert list((tmp_path / "out").iterdir()) == []
