"""A disk cache of the Canny edge controls a ControlNet run computes from its data set (issue 21).

Why: scikit-image's Canny runs one image per call; for MNIST's 60 000 training images it took 31 s of CPU
(108 s of wall time beside other jobs) on this project's 2-core machine, one thread, and a run paid it at
every start and every --resume. Masks, low-res drafts and gray controls cost 1-2 s for all of MNIST, less
than reading a file would save, so they are not cached.

Where: under the data root (``data.root``, else ``$DDPM_DATA`` or ``~/.cache/ddpm``), beside the classifiers
and reference features the package already caches there, in ``controls/<data>-<kind>-<key>.safetensors``:
uint8 controls (N, C, H, W) with the full key in the file's metadata. The key is a hash of the data set's
fingerprint (its files and their contents), the control kind, the parameters its function applies (the
defaults :func:`ddpm.data.controls.make_control` uses), scikit-image's version and :data:`CACHE_VERSION`,
so any change to one of them computes the controls again. Files are written atomically (a temporary file,
fsync, rename); an unreadable, foreign or damaged file is computed again and replaced, and a cache that
cannot be written only costs the time.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import skimage
import torch
from torch import Tensor

from ddpm.data import Dataset, parse_spec
from ddpm.data.controls import CONTROLS
from ddpm.data.dataset import fingerprint
from ddpm.safe_files import cached_tensor

CACHED_KINDS = ("canny",)  # the controls slow enough to compute that reading them back saves time
CACHE_VERSION = 1  # bump when a control function computes something else for the same parameters


def control_parameters(kind: str) -> dict[str, Any]:
    """The keyword defaults of the control function of ``kind``: what ``make_control`` applies."""
    parameters = inspect.signature(CONTROLS[kind]).parameters.values()
    return {p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty}


def cache_key(dataset: Dataset, kind: str) -> str:
    """sha256 of everything the controls of ``kind`` for ``dataset`` depend on (see the module's notes)."""
    versions = {"scikit-image": skimage.__version__} if kind == "canny" else {}
    return fingerprint(
        "controls", CACHE_VERSION, dataset.fingerprint, kind, control_parameters(kind), versions
    )


def cache_path(root: str | Path, dataset: Dataset, kind: str) -> Path:
    """``<root>/controls/<data name>-<kind>-<key[:16]>.safetensors``."""
    name = parse_spec(dataset.spec).name
    return Path(root) / "controls" / f"{name}-{kind}-{cache_key(dataset, kind)[:16]}.safetensors"


def cached_controls(
    dataset: Dataset, kind: str, root: str | Path, compute: Callable[[], Tensor], log: Callable[[str], Any]
) -> Tensor:
    """The uint8 controls of ``kind`` for ``dataset``: read from the cache under ``root`` when it holds them,
    else ``compute()``d and written there (kinds not in CACHED_KINDS are always computed)."""
    if kind not in CACHED_KINDS:
        return compute()

    def whole(controls: Tensor) -> bool:
        return controls.dtype == torch.uint8 and controls.ndim == 4 and len(controls) == len(dataset)

    path, key = cache_path(root, dataset, kind), cache_key(dataset, kind)
    return cached_tensor(
        path, key, compute, whole, log, name="controls", what=f"{len(dataset)} {kind} controls"
    )
