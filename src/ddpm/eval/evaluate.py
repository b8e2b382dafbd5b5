"""`evaluate`: samples + a data spec → a dict of metrics; `real_floor`: the same for real data.

Result keys say which features a number comes from: "fid"/"kid"/"is" for Inception features,
"fd_classifier"/"kid_classifier"/"is_classifier" for the package's classifier, "fd_coords"/
"kid_coords" for 2-D points. Every result also holds "n", the number of samples per side.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from ddpm.data import Dataset, default_data_root, load_dataset
from ddpm.eval.features import FeatureNet, extract_features, load_feature_net
from ddpm.eval.metrics import (
    class_coverage,
    confidence,
    feature_statistics,
    frechet_distance_from_stats,
    inception_score,
    kernel_inception_distance,
    precision_recall,
    sliced_wasserstein,
)
from ddpm.eval.reference import Reference, reference_features, subset_index
from ddpm.eval.samples import to_eval_tensor

METRICS: dict[str, tuple[str, ...]] = {  # feature network → the metrics it supports
    "classifier": ("fd", "kid", "precision", "recall", "is", "coverage", "confidence"),
    "inception": ("fd", "kid", "precision", "recall", "is"),
    "coords": ("fd", "kid", "precision", "recall", "swd"),
}
ALL_METRICS: tuple[str, ...] = tuple(dict.fromkeys(m for names in METRICS.values() for m in names))
KEY_SUFFIX = {"classifier": "_classifier", "inception": "", "coords": "_coords"}
HIGHER_IS_BETTER = {"precision", "recall", "is", "class_coverage", "confidence", "mean_max_prob"}
IS_SPLITS = 10  # Salimans et al. 2016
CONFIDENT_PROB = 0.9


def higher_is_better(key: str) -> bool:
    """Whether a larger value of result key `key` means better samples (FD, KID, SWD: lower is better)."""
    return key.removesuffix("_std").removesuffix("_classifier").removesuffix("_coords") in HIGHER_IS_BETTER


PRIMARY_METRICS = ("fid", "fd_classifier", "fd_coords", "swd")  # the first present ranks checkpoints


def primary_score(metrics: dict[str, float]) -> tuple[str, float]:
    """The metric that ranks checkpoints, as a lower-is-better number."""
    for key in PRIMARY_METRICS:
        if key in metrics:
            return key, metrics[key]
    key = next(k for k in metrics if k != "n")
    return key, -metrics[key] if higher_is_better(key) else metrics[key]


@dataclass(frozen=True)
class Evaluation:
    """What every score needs: the data set, its feature network, and the real reference features."""

    dataset: Dataset
    net: FeatureNet
    reference: Reference
    metrics: tuple[str, ...]


def _check_metrics(metrics: Sequence[str] | None, feature_kind: str | None = None) -> tuple[str, ...]:
    """The metrics to compute: all that `feature_kind` supports when None; else check each name."""
    if metrics is None:
        return METRICS[feature_kind] if feature_kind is not None else ALL_METRICS
    if isinstance(metrics, str) or not metrics:
        raise ValueError(
            f"metrics must be a non-empty list of names; got {metrics!r}; allowed: {', '.join(ALL_METRICS)}"
        )
    unknown = [m for m in metrics if m not in ALL_METRICS]
    if unknown:
        raise ValueError(
            f"unknown metric(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(ALL_METRICS)}"
        )
    if feature_kind is not None:
        unsupported = [m for m in metrics if m not in METRICS[feature_kind]]
        if unsupported:
            raise ValueError(
                f"metric(s) {', '.join(map(repr, unsupported))} do not apply to {feature_kind} features; "
                f"allowed: {', '.join(METRICS[feature_kind])}"
            )
    return tuple(dict.fromkeys(metrics))


def prepare(
    data_spec: str,
    n: int,
    *,
    metrics: Sequence[str] | None = None,
    split: str = "test",
    root: str | Path | None = None,
    cache_dir: str | Path | None = None,
    feature_net: str = "auto",
    inception_weights: str | Path | None = None,
    image_size: int | None = None,
    channels: int | None = None,
    device: str | torch.device = "cpu",
    batch_size: int = 256,
    progress: bool = False,
    dataset: Dataset | None = None,
) -> Evaluation:
    """Load the data, the feature network and n reference features (cached), once for many `score` calls.

    Evaluation during training prepares once and scores each checkpoint's samples; `dataset`, when
    given, is the already loaded `split` of `data_spec`.
    """
    _check_metrics(metrics)
    if dataset is None:
        dataset = load_dataset(data_spec, split=split, root=root, image_size=image_size, channels=channels)
    if not 2 <= n <= len(dataset):  # checked before a classifier is trained for nothing
        raise ValueError(
            f"n={n} but the {split} split of {data_spec!r} has {len(dataset)} samples; "
            f"use 2 <= n <= {len(dataset)}"
        )
    net = load_feature_net(
        data_spec,
        dataset.kind,
        feature_kind=feature_net,
        root=root,
        cache_dir=cache_dir,
        inception_weights=inception_weights,
        image_size=image_size,
        channels=channels,
        device=device,
        progress=progress,
    )
    chosen = _check_metrics(metrics, net.kind)
    cache_root = (
        Path(cache_dir) if cache_dir is not None else Path(root) if root is not None else default_data_root()
    )
    reference = reference_features(
        data_spec, dataset, split, net, n, cache_root, batch_size=batch_size, progress=progress
    )
    return Evaluation(dataset, net, reference, chosen)


def _check_samples(samples: Tensor, dataset: Dataset, n: int | None) -> int:
    if samples.shape[1:] != dataset.data.shape[1:]:
        raise ValueError(
            f"samples have shape {tuple(samples.shape[1:])} but {dataset.spec!r} has "
            f"{tuple(dataset.data.shape[1:])}; generate at the data's size or pass image_size/channels"
        )
    if n is None:
        return samples.shape[0]
    if not 2 <= n <= samples.shape[0]:
        raise ValueError(
            f"n={n} but only {samples.shape[0]} samples were given; use 2 <= n <= {samples.shape[0]}"
        )
    return n


def score(
    evaluation: Evaluation, samples: Tensor, *, batch_size: int = 256, seed: int = 0, progress: bool = False
) -> dict[str, float]:
    """Metrics of the first n samples (n = the reference's size) against the prepared reference.

    samples: as `evaluate` takes them. Returns the keys described in the module docstring.
    """
    samples = to_eval_tensor(samples)
    n = _check_samples(samples, evaluation.dataset, evaluation.reference.features.shape[0])
    feats, probs = extract_features(
        evaluation.net,
        lambda rows: samples[rows],
        n,
        batch_size=batch_size,
        progress=progress,
        desc="features (samples)",
    )
    real = evaluation.reference
    suffix = KEY_SUFFIX[evaluation.net.kind]
    result: dict[str, float] = {"n": float(n)}
    for metric in evaluation.metrics:
        if metric == "fd":
            key = "fid" if evaluation.net.kind == "inception" else f"fd{suffix}"
            result[key] = frechet_distance_from_stats(*feature_statistics(feats), real.mu, real.sigma)
        elif metric == "kid":
            mean, std = kernel_inception_distance(feats, real.features, seed=seed)
            result[f"kid{suffix}"], result[f"kid{suffix}_std"] = mean, std
        elif metric == "is":
            mean, std = inception_score(probs, splits=min(IS_SPLITS, n))
            result[f"is{suffix}"], result[f"is{suffix}_std"] = mean, std
        elif metric == "coverage":
            result["class_coverage"] = class_coverage(probs, confident_prob=CONFIDENT_PROB)
        elif metric == "confidence":
            result["confidence"], result["mean_max_prob"] = confidence(probs, threshold=CONFIDENT_PROB)
        elif metric == "swd":
            result["swd"] = sliced_wasserstein(feats, real.features, seed=seed)
    if "precision" in evaluation.metrics or "recall" in evaluation.metrics:
        # one pass computes both: the k-NN radii of each set are shared
        precision, recall = precision_recall(real.features, feats)
        result.update(
            {k: v for k, v in (("precision", precision), ("recall", recall)) if k in evaluation.metrics}
        )
    return result


def evaluate(
    samples: Tensor,
    data_spec: str,
    *,
    n: int | None = None,
    metrics: Sequence[str] | None = None,
    split: str = "test",
    root: str | Path | None = None,
    cache_dir: str | Path | None = None,
    feature_net: str = "auto",
    inception_weights: str | Path | None = None,
    image_size: int | None = None,
    channels: int | None = None,
    device: str | torch.device = "cpu",
    batch_size: int = 256,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, float]:
    """Score the first n samples against n real samples of `split` (default: all given samples).

    samples: float images (N, C, H, W) in [-1, 1], uint8 images (N, H, W, C) as in a samples .npz, or
        float points (N, 2). Float images are rounded to 8 bits first, as saving them would.
    metrics: default all the feature network supports: fd, kid, precision, recall, and is, coverage,
        confidence (classifier) / is (Inception) / swd (points).
    feature_net: "auto" (see features.default_feature_kind), "classifier", "inception" or "coords".
    image_size, channels: resize the real data (and train the classifier) as load_dataset does, for
        models trained on resized data.
    cache_dir: where classifiers and reference features are cached (default: the data root).
    seed: KID subsets and SWD projections.
    """
    samples = to_eval_tensor(samples)
    _check_metrics(metrics)  # a misspelt metric fails before any data is loaded or network trained
    dataset = load_dataset(data_spec, split=split, root=root, image_size=image_size, channels=channels)
    n = _check_samples(samples, dataset, n)
    evaluation = prepare(
        data_spec,
        n,
        metrics=metrics,
        split=split,
        root=root,
        cache_dir=cache_dir,
        feature_net=feature_net,
        inception_weights=inception_weights,
        image_size=image_size,
        channels=channels,
        device=device,
        batch_size=batch_size,
        progress=progress,
        dataset=dataset,
    )
    return score(evaluation, samples, batch_size=batch_size, seed=seed, progress=progress)


def real_floor(
    data_spec: str,
    n: int,
    *,
    metrics: Sequence[str] | None = None,
    root: str | Path | None = None,
    cache_dir: str | Path | None = None,
    feature_net: str = "auto",
    inception_weights: str | Path | None = None,
    image_size: int | None = None,
    channels: int | None = None,
    device: str | torch.device = "cpu",
    batch_size: int = 256,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, float]:
    """The real-vs-real floor: n train-split samples scored as if generated, against n test-split samples.

    No model can be expected to beat it at the same n: it is the metrics' own sampling noise.
    """
    train = load_dataset(data_spec, split="train", root=root, image_size=image_size, channels=channels)
    if not 2 <= n <= len(train):
        raise ValueError(
            f"n={n} is more than the {len(train)} train samples of {data_spec!r}; use 2 <= n <= {len(train)}"
        )
    samples = train.batch(subset_index(len(train), n, seed))
    return evaluate(
        samples,
        data_spec,
        n=n,
        metrics=metrics,
        split="test",
        root=root,
        cache_dir=cache_dir,
        feature_net=feature_net,
        inception_weights=inception_weights,
        image_size=image_size,
        channels=channels,
        device=device,
        batch_size=batch_size,
        seed=seed,
        progress=progress,
    )
