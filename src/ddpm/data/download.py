"""Fetch a file from the first mirror that works, verify its md5, and only then give it its name."""

from __future__ import annotations

import gzip
import hashlib
import http.client
import logging
import os
import shutil
import tempfile
import urllib.request
import zlib
from collections.abc import Sequence
from pathlib import Path

logger = logging.getLogger(__name__)

USER_AGENT = "ddpm-data/0.1 (python urllib)"  # some mirrors refuse urllib's default agent


class DownloadError(OSError):
    """No mirror gave a file with an accepted checksum."""


def md5_of(path: Path, gunzip: bool = False) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with gzip.open(path, "rb") if gunzip else open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checksum_problem(path: Path, md5: str | None, gunzipped_md5: str | None) -> str | None:
    """None when the file matches ``md5`` or, decompressed, ``gunzipped_md5``; else what is wrong.

    Either is enough: a re-compressed .gz holds the original bytes under a different gzip wrapper.
    """
    if md5 is None and gunzipped_md5 is None:
        return None
    actual = md5_of(path)
    if actual == md5:
        return None
    if gunzipped_md5 is not None:
        try:
            if md5_of(path, gunzip=True) == gunzipped_md5:
                return None
        except (OSError, EOFError, zlib.error):
            pass
    return f"md5 {actual} does not match {md5 or gunzipped_md5}"


def download_file(
    urls: Sequence[str],
    dest: Path,
    *,
    md5: str | None = None,
    gunzipped_md5: str | None = None,
    timeout_s: float = 60.0,
) -> Path:
    """Try each URL in turn; write to a temporary file beside ``dest`` and rename it once verified.

    A failed or interrupted download never leaves a file under ``dest``'s name.
    Raises DownloadError naming every URL tried and why it failed.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    failures = []
    for url in urls:
        handle, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(handle, "wb") as out:
                logger.info("downloading %s to %s", url, dest)
                request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
                with urllib.request.urlopen(request, timeout=timeout_s) as response:
                    shutil.copyfileobj(response, out, 1 << 20)
            problem = checksum_problem(tmp, md5, gunzipped_md5)
            if problem is None:
                os.replace(tmp, dest)
                return dest
            failures.append(f"{url}: {problem}")
        except (OSError, http.client.HTTPException, ValueError) as error:  # URLError is an OSError
            failures.append(f"{url}: {error}")
        finally:
            tmp.unlink(missing_ok=True)
    raise DownloadError(f"could not download {dest.name}: " + "; ".join(failures))
