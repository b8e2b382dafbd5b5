"""Files of a directory, a tar archive (any compression) or a zip archive, behind one interface.

An archive is a small file that may claim to hold a great deal, so reading one has limits:

- the files read from it (for a tar: its whole decompressed stream, which listing walks) may total at
  most ``max_archive_bytes`` (default 16 GiB), and at most ``MAX_EXPANSION`` times the archive's own
  size plus ``EXPANSION_ALLOWANCE``: images hardly compress, a bomb expands a thousandfold or more;
- both are checked against the sizes the archive declares, before the bytes they cover are read, and
  zip members are read in bounded chunks, so no member yields more than it declares;
- zip members whose data overlap another member or the central directory are refused (one compressed
  block shared by many entries is the classic small zip bomb; Python's ``zipfile`` before 3.12 reads
  them), and so are bzip2 and LZMA members, which ``zipfile`` inflates without a bound per read.

A directory has no limit: its files take the room on disk that they take in memory.
"""

from __future__ import annotations

import os
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

SKIPPED_FOLDERS = ("__MACOSX",)  # zip resource forks from macOS
ARCHIVE_ERRORS = (OSError, EOFError, RuntimeError, zlib.error, zipfile.BadZipFile, tarfile.TarError)
DEFAULT_MAX_ARCHIVE_BYTES = 16 * 1024**3  # files read from one archive, in all
MAX_EXPANSION = 100  # an archive of images may expand to 100× its size (+ the allowance) …
EXPANSION_ALLOWANCE = 256 * 1024**2  # … so a small archive of synthetic images still may, up to this
READ_CHUNK_BYTES = 1024 * 1024  # zip members are inflated this much at a time
ZIP_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate"}  # the methods read
ZIP_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, …, file name length, extra field length
BUDGET_HINT = "raise max_archive_bytes if the archive is genuine"


class ArchiveRefused(ValueError):
    """An archive, or one of its members, that would cost more to read than it may."""


@dataclass(frozen=True)
class FileEntry:
    name: str  # POSIX path relative to the directory or archive root, no "./"
    size: int  # bytes


def is_hidden(name: str) -> bool:
    """Any component starting with '.' (".DS_Store", "._x.jpg", ".git/…") or a __MACOSX folder."""
    return any(part.startswith(".") or part in SKIPPED_FOLDERS for part in name.split("/"))


def hidden_prefix(name: str) -> str | None:
    """``name`` up to its first hidden component ("a/.git/x" → "a/.git/", "a/.DS_Store"), or None."""
    parts = name.split("/")
    for i, part in enumerate(parts):
        if part.startswith(".") or part in SKIPPED_FOLDERS:
            return "/".join(parts[: i + 1]) + ("/" if i < len(parts) - 1 else "")
    return None


def clean_name(name: str) -> str:
    """Archive member name → "a/b.jpg" (no leading "./" or "/", no empty parts)."""
    return "/".join(part for part in name.replace("\\", "/").split("/") if part not in ("", "."))


class FileSource:
    """The regular, non-hidden files under ``path`` (a directory, a .tar* or a .zip).

    Use as a context manager: an archive is opened once, listed by :meth:`entries` and read by
    :meth:`read_all` in its own order (a compressed tar is then decompressed once more, not once
    per file). ``max_archive_bytes`` bounds what an archive may expand to (see the module's notes);
    going over it raises :class:`ArchiveRefused` before the bytes over it are read.
    """

    def __init__(self, path: Path, *, max_archive_bytes: int = DEFAULT_MAX_ARCHIVE_BYTES) -> None:
        if (
            isinstance(max_archive_bytes, bool)
            or not isinstance(max_archive_bytes, int)
            or max_archive_bytes < 1
        ):
            raise ValueError(f"max_archive_bytes={max_archive_bytes!r} must be a positive number of bytes")
        self.path = Path(path)
        self.max_archive_bytes = max_archive_bytes
        self._tar: tarfile.TarFile | None = None
        self._zip: zipfile.ZipFile | None = None
        self.hidden: list[str] = []  # hidden files and folders ("x/.git/") passed over by entries()
        self.limit = max_archive_bytes  # bytes the archive may expand to (see the module's notes)
        if self.path.is_dir():
            return
        expansion_limit = MAX_EXPANSION * self.path.stat().st_size + EXPANSION_ALLOWANCE
        self.limit = min(max_archive_bytes, expansion_limit)
        if zipfile.is_zipfile(self.path):
            self._zip = zipfile.ZipFile(self.path)
        elif tarfile.is_tarfile(self.path):
            self._tar = tarfile.open(self.path, "r:*")  # noqa: SIM115 (closed by __exit__)
        else:
            raise ValueError(f"folder path {self.path} is not a directory, a tar archive or a zip archive")

    def __enter__(self) -> FileSource:
        return self

    def __exit__(self, kind: type | None, error: BaseException | None, trace: TracebackType | None) -> None:
        for archive in (self._tar, self._zip):
            if archive is not None:
                archive.close()

    def entries(self) -> list[FileEntry]:
        """Every visible regular file, sorted by name; what was hidden is listed in :attr:`hidden`."""
        self.hidden = []
        try:
            found = self._list()
        except ARCHIVE_ERRORS as error:
            raise ValueError(
                f"folder path {self.path} cannot be listed: {type(error).__name__}: {error}"
            ) from None
        prefixes = (hidden_prefix(entry.name) for entry in found)
        self.hidden = sorted({*self.hidden, *(prefix for prefix in prefixes if prefix is not None)})
        return sorted((entry for entry in found if not is_hidden(entry.name)), key=lambda entry: entry.name)

    def _list(self) -> list[FileEntry]:
        if self._zip is not None:
            check_zip_layout(self._zip, self.path)
            found = [
                FileEntry(clean_name(i.filename), i.file_size) for i in self._zip.infolist() if not i.is_dir()
            ]
        elif self._tar is not None:
            found = [FileEntry(clean_name(m.name), m.size) for m in self._tar_members() if m.isfile()]
        else:
            found = []
            for dirpath, dirnames, filenames in os.walk(self.path):
                relative = Path(dirpath).relative_to(self.path)
                self.hidden += [(relative / d).as_posix() + "/" for d in dirnames if is_hidden(d)]
                dirnames[:] = [d for d in dirnames if not is_hidden(d)]  # prune .git and the like
                for filename in filenames:
                    file = Path(dirpath, filename)
                    if file.is_file():
                        found.append(FileEntry(file.relative_to(self.path).as_posix(), file.stat().st_size))
        return found

    def read_all(self, names: set[str]) -> Iterator[tuple[str, bytes | Exception]]:
        """(name, bytes) for each wanted file, in the archive's order.

        A file that cannot be read comes back as its exception, so one bad file is skipped rather
        than ending the load.
        """
        if self._zip is not None:
            members = [(clean_name(i.filename), i) for i in self._zip.infolist() if not i.is_dir()]
            wanted = (i for name, i in members if name in names and i.compress_type in ZIP_METHODS)
            self.check_expansion(sum(i.file_size for i in wanted))
            read = self._read_zip_member
        elif self._tar is not None:
            members = [(clean_name(m.name), m) for m in self._tar.getmembers() if m.isfile()]
            read = self._read_tar_member
        else:
            members = [(name, self.path / name) for name in sorted(names)]
            read = Path.read_bytes
        for name, member in members:
            if name in names:
                try:
                    yield name, read(member)
                except (*ARCHIVE_ERRORS, ArchiveRefused) as error:  # e.g. an encrypted zip member
                    yield name, error

    def check_expansion(self, total: int) -> None:
        """Refuse, naming the archive and the limit, if reading ``total`` bytes is over :attr:`limit`."""
        if total <= self.limit:
            return
        if total > self.max_archive_bytes:
            raise ArchiveRefused(
                f"archive {self.path} holds at least {total} bytes of files to read, over the limit of "
                f"{self.max_archive_bytes} bytes (max_archive_bytes); {BUDGET_HINT}"
            )
        raise ArchiveRefused(
            f"archive {self.path} would expand from {self.path.stat().st_size} to at least {total} bytes, "
            f"over its limit of {self.limit} ({MAX_EXPANSION}× its size + {EXPANSION_ALLOWANCE}): "
            "a likely decompression bomb, not read; if it is genuine, extract it and give the folder"
        )

    def _tar_members(self) -> list[tarfile.TarInfo]:
        """The tar's members, read header by header, refused once the stream runs past :attr:`limit`."""
        assert self._tar is not None
        while (member := self._tar.next()) is not None:
            self.check_expansion(member.offset_data + member.size)  # before its data is skipped
        return self._tar.getmembers()  # all loaded now: no second pass

    def _read_zip_member(self, info: zipfile.ZipInfo) -> bytes:
        """A member's bytes, inflated in bounded chunks: never more than the member declares."""
        assert self._zip is not None
        if info.compress_type not in ZIP_METHODS:
            method = zipfile.compressor_names.get(info.compress_type, "an unknown method")
            allowed = " and ".join(ZIP_METHODS.values())
            raise ArchiveRefused(
                f"zip member compressed with {method} (method {info.compress_type}); "
                f"only {allowed} members are read"
            )
        chunks = []
        with self._zip.open(info) as stream:  # ZipFile.read would inflate up to 2 GiB in one call
            while chunk := stream.read(READ_CHUNK_BYTES):
                chunks.append(chunk)
        return b"".join(chunks)

    def _read_tar_member(self, member: tarfile.TarInfo) -> bytes:
        assert self._tar is not None
        stream = self._tar.extractfile(member)
        return stream.read() if stream is not None else b""


def check_zip_layout(archive: zipfile.ZipFile, path: Path) -> None:
    """Refuse a zip whose members' data overlap each other or the central directory.

    As CPython 3.12's ``zipfile`` does when a member is opened, but for every member before any is
    read: each member's data (after its local header) must end by the next member's header.
    """
    members = sorted(archive.infolist(), key=lambda info: info.header_offset)
    central_directory = archive.start_dir  # type: ignore[attr-defined]  # set by ZipFile when it reads
    assert archive.fp is not None
    for index, info in enumerate(members):
        archive.fp.seek(info.header_offset)
        header = archive.fp.read(ZIP_LOCAL_HEADER.size)
        if len(header) < ZIP_LOCAL_HEADER.size or header[:4] != b"PK\x03\x04":
            raise ArchiveRefused(
                f"zip archive {path}: member {info.filename!r} has no local header at its offset"
            )
        _, name_bytes, extra_bytes = ZIP_LOCAL_HEADER.unpack(header)
        data_end = info.header_offset + ZIP_LOCAL_HEADER.size + name_bytes + extra_bytes + info.compress_size
        following = members[index + 1] if index + 1 < len(members) else None
        end = following.header_offset if following is not None else central_directory
        if data_end > end:
            what = repr(following.filename) if following is not None else "the central directory"
            raise ArchiveRefused(
                f"zip archive {path} has overlapping entries: {info.filename!r} reaches into {what} "
                "(a zip bomb's trick); refused, not read"
            )
