"""Files of a directory, a tar archive (any compression) or a zip archive, behind one interface."""

from __future__ import annotations

import os
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

SKIPPED_FOLDERS = ("__MACOSX",)  # zip resource forks from macOS
ARCHIVE_ERRORS = (OSError, EOFError, RuntimeError, zlib.error, zipfile.BadZipFile, tarfile.TarError)


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
    per file).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._tar: tarfile.TarFile | None = None
        self._zip: zipfile.ZipFile | None = None
        self.hidden: list[str] = []  # hidden files and folders ("x/.git/") passed over by entries()
        if self.path.is_dir():
            return
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
            found = [
                FileEntry(clean_name(i.filename), i.file_size) for i in self._zip.infolist() if not i.is_dir()
            ]
        elif self._tar is not None:
            found = [FileEntry(clean_name(m.name), m.size) for m in self._tar.getmembers() if m.isfile()]
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
            read = self._zip.read
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
                except ARCHIVE_ERRORS as error:  # e.g. an encrypted zip member, a truncated tar
                    yield name, error

    def _read_tar_member(self, member: tarfile.TarInfo) -> bytes:
        assert self._tar is not None
        stream = self._tar.extractfile(member)
        return stream.read() if stream is not None else b""
