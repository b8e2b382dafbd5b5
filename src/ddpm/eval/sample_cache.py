"""A disk cache of generated samples that come out the same at every call (issue 21).

Why: ``ddpm eval`` of a ControlNet run scores its controlled samples beside its frozen base's, drawn from the
same noises and labels without control. For the same base weights, sampler settings, seeds and labels the
base's samples are identical, yet a curve of evals over one control run's checkpoints (or a control-scale
sweep) drew them again at every point, as many network calls as the controlled samples.

Where: under the data root (``--data-root``, the run's ``data.root``, else ``$DDPM_DATA`` or
``~/.cache/ddpm``), beside the reference features, classifiers and Canny controls cached there, in
``samples/<name>-<key[:16]>.safetensors``: the float32 samples with the full key and its parts (JSON) in the
file's metadata. The key is the sha256 (:func:`ddpm.data.dataset.fingerprint`) of the parts the caller
names, which must be everything that determines the samples, with torch's version and :data:`CACHE_VERSION`.
Files are written atomically (a temporary file, fsync, rename); an unreadable or foreign file (another key,
shape or dtype) is drawn again and replaced, and a cache that cannot be written only costs the time.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ddpm.data.dataset import fingerprint
from ddpm.safe_files import cached_tensor

CACHE_VERSION = 1  # bump when the same parts draw other samples (a sampler's arithmetic changed, say)


def samples_key(parts: Mapping[str, Any]) -> str:
    """sha256 of the JSON-able ``parts`` that determine a set of samples, torch's version and the cache's."""
    return fingerprint("samples", CACHE_VERSION, torch.__version__, dict(parts))


def samples_path(root: str | Path, name: str, parts: Mapping[str, Any]) -> Path:
    """``<root>/samples/<name>-<key[:16]>.safetensors``."""
    return Path(root) / "samples" / f"{name}-{samples_key(parts)[:16]}.safetensors"


def cached_samples(
    root: str | Path,
    name: str,
    parts: Mapping[str, Any],
    shape: Sequence[int],
    draw: Callable[[], Tensor],
    log: Callable[[str], Any],
) -> Tensor:
    """The samples ``parts`` determine, float32 of ``shape`` on the CPU: read from the cache under ``root``
    when it holds them (``log`` says so in one line), else ``draw()``n and written there."""

    def whole(samples: Tensor) -> bool:
        return samples.dtype == torch.float32 and tuple(samples.shape) == tuple(shape)

    path, key = samples_path(root, name, parts), samples_key(parts)
    metadata = {"parts": json.dumps(dict(parts), sort_keys=True)}  # what the key stands for, to read
    return cached_tensor(path, key, lambda: draw().float(), whole, log, name="samples",
                         what=f"{shape[0]} {name} samples", metadata=metadata)  # fmt: skip
