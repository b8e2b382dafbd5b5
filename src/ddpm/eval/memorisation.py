"""Memorisation: how close each sample lies to its nearest training image, against held-out real data.

A model that replays its training images scores at the real-data floor of FD (the features of a copy
are the features of a real image), so a quality number needs this check beside it. For each sample,
the Euclidean distance in pixel space ([-1, 1] images, flattened) to its nearest training image; the
same for held-out real images gives the reference: the share of samples closer to the training set
than the 5th percentile of held-out images' nearest-training distances is ≈ 5% for a model that makes
new images, and near 100% for one that copies (the test of Carlini et al. 2023 and Somepalli et al.
2023, on pixels rather than on a self-supervised embedding, which no machine here can download).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

DEFAULT_QUANTILE = 0.05  # the held-out images' 5th percentile
CHUNK_ROWS = 512  # queries per block of the distance matrix (bounds memory at CHUNK_ROWS × N_train)


@dataclass(frozen=True)
class Memorisation:
    """Nearest-training-image distances of samples, and the held-out reference they are judged by."""

    distances: Tensor  # (N,) each sample's distance to its nearest training image
    nearest: Tensor  # (N,) the index of that training image
    held_out_distances: Tensor  # (M,) the same for held-out real images
    quantile: float  # the held-out quantile the threshold is taken at
    threshold: float  # that quantile of held_out_distances

    @property
    def share_below(self) -> float:
        """The share of samples closer to the training set than ``threshold`` (≈ quantile if new)."""
        return float((self.distances < self.threshold).float().mean())

    def metrics(self) -> dict[str, float]:
        """``memorised_share`` (vs the held-out quantile), the median nearest-training distances of the
        samples and of held-out images, and the threshold, as ``ddpm eval`` reports them."""
        return {
            "memorised_share": self.share_below,
            "memorised_share_expected": self.quantile,
            "nn_train_distance_median": float(self.distances.median()),
            "nn_train_distance_median_held_out": float(self.held_out_distances.median()),
            "nn_train_distance_threshold": self.threshold,
        }


def nearest_neighbours(queries: Tensor, reference: Tensor) -> tuple[Tensor, Tensor]:
    """(distances (N,), indices (N,)): each query's nearest row of ``reference`` in Euclidean distance.

    ``queries`` (N, …) and ``reference`` (M, …) are flattened per row and compared in float64, in blocks
    of CHUNK_ROWS queries, so memory stays at CHUNK_ROWS × M distances.
    """
    if queries.shape[1:] != reference.shape[1:]:
        raise ValueError(
            f"samples of shape {tuple(queries.shape[1:])} cannot be compared with training images of shape "
            f"{tuple(reference.shape[1:])}; evaluate against the data the model was trained on"
        )
    if len(reference) == 0 or len(queries) == 0:
        raise ValueError("nearest neighbours need at least one query and one reference image")
    flat_reference = reference.reshape(len(reference), -1).double()
    distances, indices = [], []
    for start in range(0, len(queries), CHUNK_ROWS):
        block = queries[start : start + CHUNK_ROWS].reshape(-1, flat_reference.shape[1]).double()
        found = torch.cdist(block, flat_reference).min(dim=1)  # (chunk,) each
        distances.append(found.values)
        indices.append(found.indices)
    return torch.cat(distances), torch.cat(indices)


def memorisation(
    samples: Tensor, train: Tensor, held_out: Tensor, *, quantile: float = DEFAULT_QUANTILE
) -> Memorisation:
    """Nearest-training distances of ``samples`` and of ``held_out`` real images (all (N, C, H, W) in
    [-1, 1]); the threshold is the held-out images' ``quantile``."""
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"quantile={quantile!r} is invalid; give a share strictly between 0 and 1")
    distances, nearest = nearest_neighbours(samples, train)
    held_out_distances, _ = nearest_neighbours(held_out, train)
    threshold = float(torch.quantile(held_out_distances, quantile))
    return Memorisation(distances, nearest, held_out_distances, quantile, threshold)
