"""Features of real data, cached per data set fingerprint, split, feature network and sample count.

Real features are the expensive half of every evaluation (for Inception, minutes per 10k images on a
CPU) and never change, so they are computed once and stored as safetensors (`features` (n, D)
float32, `mu` (D,) and `sigma` (D, D) float64) with a JSON description beside them. KID and
precision/recall need the features themselves, not only (μ, Σ).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from torch import Tensor

from ddpm.data import Dataset, parse_spec
from ddpm.eval.features import FeatureNet, extract_features
from ddpm.eval.metrics import feature_statistics
from ddpm.safe_files import load_safetensors

REFERENCE_SUBSET_SEED = 0  # which n real samples: fixed, so a reference never moves with a run's seed


@dataclass(frozen=True)
class Reference:
    features: Tensor  # (n, D) float32
    mu: np.ndarray  # (D,) float64
    sigma: np.ndarray  # (D, D) float64
    path: Path  # the cached .safetensors file


def subset_index(size: int, n: int, seed: int) -> Tensor:
    """n distinct rows of a set of `size`, seeded and sorted; all rows, in order, when n == size."""
    if n == size:
        return torch.arange(size)
    return torch.randperm(size, generator=torch.Generator().manual_seed(seed))[:n].sort().values


def reference_path(
    data_spec: str, dataset: Dataset, split: str, net: FeatureNet, n: int, cache_root: Path
) -> Path:
    name = parse_spec(data_spec).name
    return (
        Path(cache_root)
        / "reference"
        / f"{name}-{dataset.fingerprint[:12]}-{split}-{net.name}-n{n}.safetensors"
    )


def reference_features(
    data_spec: str,
    dataset: Dataset,
    split: str,
    net: FeatureNet,
    n: int,
    cache_root: Path,
    *,
    batch_size: int = 256,
    progress: bool = False,
) -> Reference:
    """Features and (μ, Σ) of n real samples of `dataset` (the `split` of `data_spec`), cached."""
    if not 2 <= n <= len(dataset):
        raise ValueError(
            f"n={n} but the {split} split of {data_spec!r} has {len(dataset)} samples; "
            f"use 2 <= n <= {len(dataset)}"
        )
    path = reference_path(data_spec, dataset, split, net, n, cache_root)
    meta_path = path.with_suffix(".json")
    if path.is_file() and meta_path.is_file():
        stored = load_safetensors(path)
        return Reference(stored["features"], stored["mu"].numpy(), stored["sigma"].numpy(), path)
    index = subset_index(len(dataset), n, REFERENCE_SUBSET_SEED)
    feats, _ = extract_features(
        net,
        lambda rows: dataset.batch(index[rows]),
        n,
        batch_size=batch_size,
        progress=progress,
        desc=f"features ({split} reference)",
    )
    mu, sigma = feature_statistics(feats)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(
        {"features": feats.contiguous(), "mu": torch.from_numpy(mu), "sigma": torch.from_numpy(sigma)}, path
    )
    meta = {
        "data": data_spec,
        "split": split,
        "fingerprint": dataset.fingerprint,
        "feature_net": net.name,
        "n": n,
        "subset_seed": REFERENCE_SUBSET_SEED,
    }
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")  # written last: its presence marks a whole entry
    return Reference(feats, mu, sigma, path)
