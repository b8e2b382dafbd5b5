"""Hostile archives cost little: zip and tar bombs and overlapping zip entries are refused before reading.

The zips are written byte by byte (local headers, data, central directory), so a test can say exactly
what each member declares and where its data lies; the deflate stream of 1 MiB of zeros is made once
and reused, so a "400 MiB" archive is half a megabyte on disk and costs nothing to build.
"""

from __future__ import annotations

import gzip
import io
import struct
import tarfile
import time
import tracemalloc
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import pytest

import ddpm.data.sources as sources
from ddpm.data import load_dataset
from ddpm.data.sources import FileSource
from tests.data.test_folder import _png, _rgb

MIB = 1024 * 1024
ZEROS = bytes(MIB)
FAST_S = 2.0  # generous: refusals here take milliseconds; reading the bombs would take seconds or more


def _deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)  # raw deflate, as in a zip
    return compressor.compress(data) + compressor.flush()


ZEROS_DEFLATED = _deflate(ZEROS)


@dataclass(frozen=True)
class Member:
    name: str
    method: int  # 0 stored, 8 deflate
    stored: bytes  # the bytes after the local header
    crc: int
    size: int  # the size it declares once inflated


def _member(name: str, payload: bytes, *, method: int = 8, stored: bytes | None = None) -> Member:
    """A member holding ``payload``; ``stored`` (what is written) defaults to it, deflated for method 8."""
    if stored is None:
        stored = _deflate(payload) if method == 8 else payload
    return Member(name, method, stored, zlib.crc32(payload), len(payload))


def _local(m: Member) -> bytes:
    head = struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, m.method, 0, 0, m.crc, len(m.stored), m.size,
                       len(m.name.encode()), 0)  # fmt: skip
    return head + m.name.encode() + m.stored


def _central(m: Member, offset: int, compressed: int) -> bytes:
    head = struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, m.method, 0, 0, m.crc, compressed, m.size,
                       len(m.name.encode()), 0, 0, 0, 0, 0, offset)  # fmt: skip
    return head + m.name.encode()


def _zip(members: list[Member], central: list[tuple[Member, int, int]] | None = None) -> bytes:
    """``members`` one after another, then a central directory: by default one entry for each at its
    own offset, else the given (member, local header offset, compressed size) entries."""
    offsets = [sum(len(_local(m)) for m in members[:i]) for i in range(len(members))]
    body = b"".join(_local(m) for m in members)
    if central is None:
        central = [(m, offset, len(m.stored)) for m, offset in zip(members, offsets, strict=True)]
    directory = b"".join(_central(*entry) for entry in central)
    count = len(central)
    return (
        body
        + directory
        + struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, count, count, len(directory), len(body), 0)
    )


def _files(root: Path) -> set[Path]:
    return set(root.rglob("*"))


def _refused_quickly(path: Path, match: str, **options) -> None:
    """load_dataset refuses ``path`` within FAST_S, reading no zip member and writing nothing."""
    before = _files(path.parent)
    start = time.perf_counter()
    with pytest.raises(ValueError, match=match) as info:
        load_dataset(f"folder:{path}", image_size=8, **options)
    assert time.perf_counter() - start < FAST_S
    assert "\n" not in str(info.value)  # one line
    assert _files(path.parent) == before


@pytest.fixture
def no_member_read(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args, **kwargs):
        raise AssertionError("a member was read")

    monkeypatch.setattr(FileSource, "_read_zip_member", fail)
    monkeypatch.setattr(FileSource, "_read_tar_member", fail)


def _bomb(count: int) -> bytes:
    return _zip([_member(f"x/{i:03d}.png", ZEROS, stored=ZEROS_DEFLATED) for i in range(count)])


def test_a_zip_bomb_over_the_byte_budget_is_refused_before_reading(tmp_path: Path, no_member_read) -> None:
    bomb = tmp_path / "bomb.zip"
    bomb.write_bytes(_bomb(100))
    assert bomb.stat().st_size < 200_000
    _refused_quickly(
        bomb,
        rf"^archive {bomb} holds at least {100 * MIB} bytes of files to read, over the limit of {64 * MIB} "
        r"bytes \(max_archive_bytes\); raise max_archive_bytes if the archive is genuine$",
        max_archive_bytes=64 * MIB,
    )


def test_a_zip_bomb_under_the_default_budget_is_refused_for_its_expansion(
    tmp_path: Path, no_member_read
) -> None:
    bomb = tmp_path / "bomb.zip"
    bomb.write_bytes(_bomb(400))
    size = bomb.stat().st_size
    assert size < 600_000  # 400 MiB declared: under the 16 GiB default, but 700× the file
    _refused_quickly(
        bomb,
        rf"^archive {bomb} would expand from {size} to at least {400 * MIB} bytes, over its limit of "
        rf"{100 * size + 256 * MIB} \(100× its size \+ 268435456\): a likely decompression bomb, not read; "
        "if it is genuine, extract it and give the folder$",
    )


def test_overlapping_zip_entries_are_refused(tmp_path: Path, no_member_read) -> None:
    """b.png's local header and data lie inside a.png's stored data; Python 3.11's zipfile reads both."""
    inner = _member("b.png", _png(_rgb(1)), method=0)
    outer = _member("a.png", _local(inner), method=0)
    path = tmp_path / "quoted.zip"
    path.write_bytes(_zip([outer], central=[(outer, 0, len(outer.stored)), (inner, 35, len(inner.stored))]))
    with zipfile.ZipFile(path) as archive:
        assert archive.read("b.png") == inner.stored and archive.read("a.png") == outer.stored
    _refused_quickly(path, rf"^zip archive {path} has overlapping entries: 'a.png' reaches into 'b.png' ")


def test_many_entries_sharing_one_member_are_refused(tmp_path: Path, no_member_read) -> None:
    shared = _member("x.png", ZEROS, stored=ZEROS_DEFLATED)
    path = tmp_path / "shared.zip"
    path.write_bytes(_zip([shared], central=[(shared, 0, len(shared.stored))] * 50))
    _refused_quickly(path, rf"^zip archive {path} has overlapping entries: 'x.png' reaches into 'x.png' ")


def test_a_member_reaching_into_the_central_directory_is_refused(tmp_path: Path, no_member_read) -> None:
    member = _member("a.png", _png(_rgb(2)))
    path = tmp_path / "long.zip"
    path.write_bytes(_zip([member], central=[(member, 0, len(member.stored) + 40)]))
    _refused_quickly(
        path,
        rf"^zip archive {path} has overlapping entries: 'a.png' reaches into the central directory "
        r"\(a zip bomb's trick\); refused, not read$",
    )


def test_a_central_entry_without_a_local_header_is_refused(tmp_path: Path) -> None:
    member = _member("a.png", _png(_rgb(2)))
    end = len(_local(member))  # where the central directory starts: no local header there
    path = tmp_path / "nowhere.zip"
    path.write_bytes(_zip([member], central=[(member, 0, len(member.stored)), (member, end, 0)]))
    _refused_quickly(path, rf"^zip archive {path}: member 'a.png' has no local header at its offset$")


def _tar_gz_of_zeros(count: int) -> bytes:
    """A tar.gz of ``count`` 1 MiB files of zeros, as concatenated gzip members (gzip reads them as one)."""
    zeros = gzip.compress(ZEROS, compresslevel=9)
    parts = []
    for i in range(count):
        info = tarfile.TarInfo(f"x/{i:03d}.png")
        info.size = MIB
        parts += [gzip.compress(info.tobuf(format=tarfile.USTAR_FORMAT)), zeros]
    return b"".join(parts) + gzip.compress(bytes(1024))  # end-of-archive blocks


def test_a_tar_bomb_is_refused_while_listing(tmp_path: Path, no_member_read) -> None:
    bomb = tmp_path / "bomb.tar.gz"
    bomb.write_bytes(_tar_gz_of_zeros(40))
    match = rf"^archive {bomb} holds at least \d+ bytes of files to read, over the limit of {8 * MIB} bytes"
    _refused_quickly(bomb, match, max_archive_bytes=8 * MIB)


def test_a_tar_bomb_is_refused_for_its_expansion(tmp_path: Path, monkeypatch, no_member_read) -> None:
    monkeypatch.setattr(
        sources, "EXPANSION_ALLOWANCE", 2 * MIB
    )  # the default 256 MiB takes a second to reach
    bomb = tmp_path / "bomb.tar.gz"
    bomb.write_bytes(_tar_gz_of_zeros(40))
    _refused_quickly(bomb, rf"^archive {bomb} would expand from {bomb.stat().st_size} to at least \d+ bytes")


def test_a_member_inflating_past_its_declared_size_costs_only_what_it_declares(tmp_path: Path) -> None:
    """The member says 'a PNG of 300 bytes' but its deflate stream goes on for 64 MiB of zeros."""
    png = _png(_rgb(3))
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    stream = compressor.compress(png) + b"".join(compressor.compress(ZEROS) for _ in range(64))
    liar = tmp_path / "liar.zip"
    liar.write_bytes(_zip([_member("a.png", png, stored=stream + compressor.flush())]))
    tracemalloc.start()
    try:
        data = load_dataset(f"folder:{liar}", image_size=8)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(data) == 1 and peak < 16 * MIB  # ZipFile.read inflates it all at once: ≥ 64 MiB


def test_bzip2_and_lzma_zip_members_are_skipped_with_their_reason(tmp_path: Path) -> None:
    path = tmp_path / "methods.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("a.png", _png(_rgb(4)), compress_type=zipfile.ZIP_DEFLATED)
        archive.writestr("b.png", _png(_rgb(5)), compress_type=zipfile.ZIP_BZIP2)
        archive.writestr("c.png", _png(_rgb(6)), compress_type=zipfile.ZIP_LZMA)
    with pytest.warns(UserWarning, match="skipped 2 unreadable image"):
        data = load_dataset(f"folder:{path}", image_size=8)
    assert len(data) == 1
    assert {(s.name, s.reason) for s in data.skipped} == {
        ("b.png", "zip member compressed with bzip2 (method 12); only stored and deflate members are read"),
        ("c.png", "zip member compressed with lzma (method 14); only stored and deflate members are read"),
    }


def test_genuine_archives_and_folders_read_as_before(tmp_path: Path) -> None:
    images = {f"cat/{i}.png": _png(_rgb(i)) for i in range(3)}
    zipped, tarred, folder = tmp_path / "a.zip", tmp_path / "a.tar.gz", tmp_path / "folder"
    with zipfile.ZipFile(zipped, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in images.items():
            archive.writestr(name, data)
    with tarfile.open(tarred, "w:gz") as archive:
        for name, data in images.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    for name, data in images.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    loaded = [load_dataset(f"folder:{p}", image_size=8, max_archive_bytes=10**6) for p in (zipped, tarred)]
    loaded.append(load_dataset(f"folder:{folder}", image_size=8, max_archive_bytes=1))  # folders: no limit
    assert all(d.data.equal(loaded[0].data) and len(d) == 3 for d in loaded)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "1"])
def test_the_budget_must_be_a_positive_number_of_bytes(tmp_path: Path, bad) -> None:
    (tmp_path / "a.png").write_bytes(_png(_rgb(1)))
    with pytest.raises(ValueError, match=rf"^max_archive_bytes={bad!r} must be a positive number of bytes$"):
        load_dataset(f"folder:{tmp_path}", max_archive_bytes=bad)


def test_the_training_budget_is_the_data_max_archive_gb_key(tmp_path: Path, capsys) -> None:
    """`ddpm train --set data.max_archive_gb=…` reaches the loader: a 40 MiB tar bomb over a 10 MiB budget
    is refused in one line, quickly, and no run directory is written."""
    from ddpm.cli import main

    bomb = tmp_path / "bomb.tar.gz"
    bomb.write_bytes(_tar_gz_of_zeros(40))
    out = tmp_path / "run"
    started = time.perf_counter()
    status = main(["train", "--data", f"folder:{bomb}", "--set", f"data.max_archive_gb={10 / 1024}",
                   "--steps", "1", "--out", str(out)])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert status == 2 and time.perf_counter() - started < 10
    assert len(err.splitlines()) == 1 and f"over the limit of {10 * MIB} bytes" in err
    assert not out.exists()
