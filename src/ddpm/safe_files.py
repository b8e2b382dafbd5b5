"""Model files read safely (safetensors with a checked header, never a pickle) and written durably.

Every safetensors file the package reads goes through :func:`load_safetensors`. Before the
safetensors library sees the file, :func:`read_safetensors_header` checks what the file claims
against what it is, reading nothing but the 8-byte length and the header itself:

- the header length fits in the file (and under safetensors' own 100 MB limit);
- the header is a JSON object: ``{name: {"dtype", "shape", "data_offsets"}, "__metadata__": {str: str}}``;
- every dtype is known, every shape a list of non-negative integers, and ``end - begin`` equals
  ``prod(shape) × itemsize`` (Python integers: a huge shape cannot overflow);
- the tensors tile the data section exactly, in order, to the last byte of the file.

A header that lies (offsets past the end, a shape larger than its bytes, a length of 2⁶²) is refused
with one line naming the file, before any tensor memory is allocated. A pickle or a ``torch.save``
zip renamed ``.safetensors`` fails the first check and is named as such; nothing is ever unpickled.

Writing: :func:`write_durably` flushes and fsyncs a file before it returns, and
:func:`atomic_write_text` replaces a small file (config.toml, a log) by renaming a complete,
fsynced temporary over it, so a crash leaves the old file or the new one, never half of either.
:func:`cached_tensor` keeps a computed tensor in such a file, keyed by a hash of what it depends on.
"""

from __future__ import annotations

import glob
import json
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

HEADER_LENGTH_BYTES = 8  # little-endian u64 at the start of every safetensors file
MAX_HEADER_BYTES = 100 * 1024 * 1024  # safetensors' own limit
DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1,
    "U16": 2, "I16": 2, "F16": 2, "BF16": 2,
    "U32": 4, "I32": 4, "F32": 4,
    "U64": 8, "I64": 8, "F64": 8,
}  # fmt: skip
PICKLE_PROTOCOL_OPCODE = 0x80  # first byte of a pickle of protocol ≥ 2 (torch's legacy format)
ZIP_MAGIC = b"PK\x03\x04"  # torch.save's default format: a zip holding a pickle


class UnsafeFileError(ValueError):
    """A model file that is not what it claims to be; it was refused without being loaded."""


@dataclass(frozen=True)
class TensorEntry:
    dtype: str  # safetensors dtype name, e.g. "F32"
    shape: tuple[int, ...]
    begin: int  # byte offsets into the data section (after the header)
    end: int


def read_safetensors_header(path: str | Path) -> dict[str, TensorEntry]:
    """Check a safetensors file's header against its size; return its tensor entries.

    Reads only the first ``8 + header length`` bytes. Raises UnsafeFileError naming the file.
    """
    path = Path(path)
    with path.open("rb") as f:
        size = os.fstat(f.fileno()).st_size
        start = f.read(HEADER_LENGTH_BYTES)
        if len(start) < HEADER_LENGTH_BYTES:
            raise UnsafeFileError(f"{path} is not a safetensors file: {size} bytes, too short for a header")
        _refuse_pickles(path, start)
        header_bytes = int.from_bytes(start, "little")
        if header_bytes > min(size - HEADER_LENGTH_BYTES, MAX_HEADER_BYTES):
            raise UnsafeFileError(
                f"{path} is not a valid safetensors file: its header claims {header_bytes} bytes "
                f"but the file holds {size - HEADER_LENGTH_BYTES} after the length"
            )
        raw = f.read(header_bytes)
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicate_keys)
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise UnsafeFileError(f"{path} has a safetensors header that is not JSON ({err})") from None
    if not isinstance(header, dict):
        raise UnsafeFileError(f"{path} has a safetensors header that is not a JSON object")
    entries = {}
    for name, info in header.items():
        if name == "__metadata__":
            if not (isinstance(info, dict) and all(isinstance(v, str) for v in info.values())):
                raise UnsafeFileError(f"{path}: __metadata__ must map strings to strings")
            continue
        entries[name] = _entry(path, name, info)
    _check_tiling(path, entries, size - HEADER_LENGTH_BYTES - header_bytes)
    return entries


def load_safetensors(path: str | Path, device: str | torch.device = "cpu") -> dict[str, Tensor]:
    """Tensors of a safetensors file whose header passed :func:`read_safetensors_header`."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    read_safetensors_header(path)
    try:
        return load_file(path, device=str(device))
    except SafetensorError as err:  # the header was checked; this would be a file changed meanwhile
        raise UnsafeFileError(f"{path} could not be read as safetensors ({err})") from None


def _refuse_pickles(path: Path, start: bytes) -> None:
    if start[0] == PICKLE_PROTOCOL_OPCODE and 2 <= start[1] <= 5:
        raise UnsafeFileError(f"{path} is a pickle, not a safetensors file; pickles are never loaded")
    if start.startswith(ZIP_MAGIC):
        raise UnsafeFileError(
            f"{path} is a zip archive (a torch.save file?), not a safetensors file; pickles are never loaded"
        )


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError("duplicate keys")
    return dict(pairs)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _entry(path: Path, name: str, info: Any) -> TensorEntry:
    if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
        raise UnsafeFileError(f"{path}: tensor {name!r} needs exactly dtype, shape and data_offsets")
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if dtype not in DTYPE_BYTES:
        allowed = ", ".join(DTYPE_BYTES)
        raise UnsafeFileError(f"{path}: tensor {name!r} has dtype {dtype!r}; allowed: {allowed}")
    if not (isinstance(shape, list) and all(_is_int(n) and n >= 0 for n in shape)):
        raise UnsafeFileError(f"{path}: tensor {name!r} has shape {shape!r}; expected non-negative integers")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(o) for o in offsets)):
        raise UnsafeFileError(f"{path}: tensor {name!r} has data_offsets {offsets!r}; expected [begin, end]")
    begin, end = offsets
    claimed = math.prod(shape) * DTYPE_BYTES[dtype]  # exact integer: no overflow for lying shapes
    if not 0 <= begin <= end or end - begin != claimed:
        raise UnsafeFileError(
            f"{path}: tensor {name!r} of shape {shape} ({dtype}) needs {claimed} bytes "
            f"but its data_offsets {offsets} give {end - begin}"
        )
    return TensorEntry(dtype, tuple(shape), begin, end)


def _check_tiling(path: Path, entries: dict[str, TensorEntry], data_bytes: int) -> None:
    """The tensors must cover the data section exactly, one after another (as safetensors writes)."""
    position = 0
    for name, entry in sorted(entries.items(), key=lambda item: (item[1].begin, item[1].end)):
        if entry.begin != position:
            raise UnsafeFileError(
                f"{path}: tensor {name!r} starts at byte {entry.begin} of the data, expected {position}"
            )
        position = entry.end
    if position != data_bytes:
        raise UnsafeFileError(
            f"{path}: the tensors cover {position} bytes of data but the file holds {data_bytes}"
        )


def write_durably(path: Path, data: bytes) -> None:
    """Write ``data`` to a new file and fsync it (the bytes are on disk when this returns)."""
    with Path(path).open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def fsync_dir(path: Path) -> None:
    """fsync a directory, so the names created or renamed in it survive a power cut (POSIX only)."""
    if os.name == "nt":  # Windows cannot open a directory; its renames are journalled by NTFS
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def pid_alive(pid: int) -> bool:
    """Whether a process of this id runs on this machine (scratch files name their writer's pid)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def atomic_write_text(path: str | Path, text: str) -> None:
    """Replace ``path`` with ``text`` atomically: temporary file, fsync, rename, fsync the folder.

    Temporaries ``.tmp-<name>-<pid>`` left by a killed writer are removed first.
    """
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """:func:`atomic_write_text` for bytes (a safetensors file, say)."""
    path = Path(path)
    for stale in path.parent.glob(f".tmp-{glob.escape(path.name)}-*"):
        pid = stale.name.rsplit("-", 1)[1]
        if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
            stale.unlink(missing_ok=True)
    tmp = path.with_name(f".tmp-{path.name}-{os.getpid()}")
    try:
        write_durably(tmp, data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def cached_tensor(
    path: str | Path,
    key: str,
    compute: Callable[[], Tensor],
    fits: Callable[[Tensor], bool],
    log: Callable[[str], Any],
    *,
    name: str,
    what: str,
    metadata: Mapping[str, str] | None = None,
) -> Tensor:
    """A tensor cached in the safetensors file ``path``, which holds it alone under ``name``, with ``key``
    (a hash of all it depends on) in its metadata: read back when the file is whole, has that key and
    ``fits``, else ``compute()``d and written atomically (with ``metadata`` beside the key). An unreadable or
    foreign file is computed again and replaced; a cache that cannot be written only costs the time.
    ``log`` gets one line whenever the cache is read, refused or not written; ``what`` names the tensor
    there ("12 canny controls")."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import save

    path = Path(path)
    if path.is_file():
        try:
            read_safetensors_header(path)  # checked before safetensors parses it; then opened once
            with safe_open(path, framework="pt") as file:
                # the key first: a foreign file's tensors are never loaded
                mine = (file.metadata() or {}).get("key") == key and set(file.keys()) == {name}
                value = file.get_tensor(name) if mine else None
        except (UnsafeFileError, SafetensorError, OSError, ValueError) as err:
            log(f"cache {path} is unreadable ({err}); computing the {what} again")
        else:
            if value is not None and fits(value):
                log(f"read {what} from the cache {path}")
                return value
            log(f"cache {path} holds other {name}; computing the {what} again")
    value = compute()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, save({name: value.contiguous()}, metadata={**(metadata or {}), "key": key}))
    except OSError as err:
        log(f"could not cache the {what} at {path} ({err}); they will be computed again next time")
    return value
