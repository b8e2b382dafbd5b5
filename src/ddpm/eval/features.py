"""Which network turns samples into features for a data set, and batched extraction with a progress bar.

- digits, MNIST, Fashion-MNIST (small or grey, labelled): the package's classifier (`classifier.py`);
  its penultimate features give FD_classifier, its softmax the classifier IS, coverage and confidence.
- other images (CIFAR-10, folders of photos): the FID Inception-v3 (`inception.py`), pool3 features
  and the softmax of its 1008 logits for IS.
- 2-D points: the coordinates themselves.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ddpm.data import parse_spec
from ddpm.eval.classifier import load_or_train_classifier

FEATURE_KINDS: tuple[str, ...] = ("classifier", "inception", "coords")
CLASSIFIER_DATA: tuple[str, ...] = ("digits", "mnist", "fashion-mnist")


@dataclass(frozen=True)
class FeatureNet:
    kind: str  # one of FEATURE_KINDS
    name: str  # identifies the exact network (data fingerprint and recipe, or weights) in cache names
    # a batch in [-1, 1] on `device` → (features (B, D), class probabilities (B, C) or None)
    embed: Callable[[Tensor], tuple[Tensor, Tensor | None]]
    device: torch.device


def default_feature_kind(data_spec: str, kind: str) -> str:
    """The feature network a data set is measured with when none is chosen."""
    if kind == "points":
        return "coords"
    return "classifier" if parse_spec(data_spec).name in CLASSIFIER_DATA else "inception"


def load_feature_net(
    data_spec: str,
    data_kind: str,
    *,
    feature_kind: str = "auto",
    root: str | Path | None = None,
    cache_dir: str | Path | None = None,
    inception_weights: str | Path | None = None,
    image_size: int | None = None,
    channels: int | None = None,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> FeatureNet:
    """Build (and for the classifier, train or load from cache) the feature network for a data set."""
    allowed = ("auto", *FEATURE_KINDS)
    if feature_kind not in allowed:
        raise ValueError(f"unknown feature network {feature_kind!r}; allowed: {', '.join(allowed)}")
    kind = default_feature_kind(data_spec, data_kind) if feature_kind == "auto" else feature_kind
    if (kind == "coords") != (data_kind == "points"):
        raise ValueError(f"feature network {kind!r} does not apply to {data_kind} ({data_spec!r})")
    device = torch.device(device)
    if kind == "coords":
        return FeatureNet("coords", "coords", lambda x: (x, None), device)
    if kind == "classifier":
        trained = load_or_train_classifier(
            data_spec,
            root=root,
            cache_dir=cache_dir,
            image_size=image_size,
            channels=channels,
            progress=progress,
        )
        model = trained.model.to(device)

        def embed_classifier(x: Tensor) -> tuple[Tensor, Tensor | None]:
            feats, logits = model(x)
            return feats, logits.softmax(dim=1)

        return FeatureNet("classifier", trained.name, embed_classifier, device)
    data_root = Path(root) if root is not None else None
    # Imported here so that `python -m ddpm.eval.inception` does not find its module already imported.
    from ddpm.eval.inception import FID_WEIGHTS_NAME, load_fid_inception

    inception = load_fid_inception(inception_weights, data_root=data_root, device=device)

    def embed_inception(x: Tensor) -> tuple[Tensor, Tensor | None]:
        feats, logits = inception(x)
        return feats, logits.softmax(dim=1)

    return FeatureNet("inception", f"inception-{FID_WEIGHTS_NAME}", embed_inception, device)


@torch.no_grad()
def extract_features(
    net: FeatureNet,
    batches: Callable[[Tensor], Tensor],
    count: int,
    *,
    batch_size: int = 256,
    progress: bool = False,
    desc: str = "features",
) -> tuple[Tensor, Tensor | None]:
    """Run `net` over rows 0..count-1, fetched by `batches(index) -> float batch in [-1, 1]`.

    Returns float32 features (count, D) and probabilities (count, C) or None, on the CPU.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    feats, probs = [], []
    for index in tqdm(torch.arange(count).split(batch_size), desc=desc, disable=not progress, leave=False):
        batch_feats, batch_probs = net.embed(batches(index).to(net.device))
        feats.append(batch_feats.float().cpu())
        if batch_probs is not None:
            probs.append(batch_probs.double().cpu())
    return torch.cat(feats), (torch.cat(probs) if probs else None)
