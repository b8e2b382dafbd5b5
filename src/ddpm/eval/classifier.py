"""A small CNN the package trains on a labelled image data set, to measure samples where Inception can't.

Inception-v3 features mean little on 8×8 digits or 28×28 grey MNIST, so for those data sets FD, KID,
precision/recall use this classifier's penultimate features ("FD_classifier"), and its softmax gives
a classifier Inception Score, class coverage and confidence. Training is seeded and the recipe is
versioned; the weights are cached as safetensors + JSON under the data root, named by the data set's
fingerprint and the recipe version, so a recipe change never reuses stale weights.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import Tensor, nn
from tqdm.auto import tqdm

from ddpm.data import Dataset, load_dataset
from ddpm.data.spec import default_data_root, parse_spec
from ddpm.safe_files import load_safetensors

RECIPE: dict[str, Any] = {
    "version": "cnn1",  # bump when anything below or the architecture changes
    "width": 32,  # channels of the first conv; the second has twice as many
    "feature_dim": 128,  # penultimate layer: the features FD_classifier uses
    "batch_size": 128,
    "learning_rate": 3e-3,  # AdamW, cosine-decayed to 0 over training
    "weight_decay": 0.05,
    "min_epochs": 2,  # MNIST: 2 epochs ≈ 99.1% test accuracy
    "min_samples_seen": 60_000,  # small sets get more epochs: 1,500 digits → 40 epochs ≈ 97%
    "seed": 0,
}


class SmallCNN(nn.Module):
    """conv5×5/2 → ReLU → conv3×3/2 → ReLU → linear → ReLU (features) → linear (logits).

    Strided convolutions instead of conv + max-pool: a quarter of the arithmetic at the same accuracy
    on MNIST (≈ 99%), which keeps training near half a minute on one CPU core.
    """

    def __init__(
        self, in_channels: int, image_size: int, num_classes: int, width: int = 32, feature_dim: int = 128
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 5, stride=2, padding=2)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1)
        side = math.ceil(math.ceil(image_size / 2) / 2)  # each stride-2 conv halves, rounding up
        self.hidden = nn.Linear(2 * width * side * side, feature_dim)
        self.head = nn.Linear(feature_dim, num_classes)
        # set after training to the RMS feature of the train split, so that x·y / D ≈ 1 like Inception's
        # pool3 features: KID's cubic kernel (x·y / D + 1)³ is only meaningful at that scale
        self.register_buffer("feature_scale", torch.ones(()))

    def hidden_activations(self, images: Tensor) -> Tensor:
        """Penultimate activations (N, feature_dim) of images in [-1, 1] (N, C, H, W)."""
        x = F.relu(self.conv1(images))  # (N, w, H/2, W/2)
        x = F.relu(self.conv2(x))  # (N, 2w, H/4, W/4)
        return F.relu(self.hidden(x.flatten(1)))

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """(features (N, feature_dim) = activations / feature_scale, logits (N, num_classes))."""
        hidden = self.hidden_activations(images)
        return hidden / self.feature_scale, self.head(hidden)


@dataclass(frozen=True)
class TrainedClassifier:
    model: SmallCNN  # in eval mode, gradients off
    metadata: dict[str, Any]  # recipe, data set, test accuracy, ...
    path: Path  # the cached .safetensors file

    @property
    def name(self) -> str:
        """'classifier-<data>-<fingerprint>-<recipe>-<weights sha256[:8]>': reference features cached under
        this name always come from these exact weights, even if the classifier is retrained elsewhere."""
        return f"classifier-{self.path.stem}-{hashlib.sha256(self.path.read_bytes()).hexdigest()[:8]}"


def _check_trainable(dataset: Dataset) -> None:
    if dataset.kind != "images" or dataset.labels is None:
        raise ValueError(
            f"data set {dataset.spec!r} has no labelled images; the classifier needs class labels"
        )
    _, height, width = dataset.sample_shape
    if height != width or height < 4:
        raise ValueError(
            f"classifier needs square images of side >= 4; {dataset.spec!r} has {height}×{width}"
        )


def build_classifier(dataset: Dataset, recipe: dict[str, Any] = RECIPE) -> SmallCNN:
    _check_trainable(dataset)
    channels, size, _ = dataset.sample_shape
    return SmallCNN(channels, size, dataset.num_classes, recipe["width"], recipe["feature_dim"])


@torch.no_grad()
def classifier_accuracy(model: SmallCNN, dataset: Dataset, batch_size: int = 1000) -> float:
    """Top-1 accuracy of `model` on a labelled data set."""
    correct = 0
    for start in range(0, len(dataset), batch_size):
        index = torch.arange(start, min(start + batch_size, len(dataset)))
        _, logits = model(dataset.batch(index))
        correct += int((logits.argmax(1) == dataset.labels[index]).sum())
    return correct / len(dataset)


def train_classifier(train: Dataset, recipe: dict[str, Any] = RECIPE, *, progress: bool = False) -> SmallCNN:
    """Train with AdamW and cross-entropy on the CPU; the same data and recipe give the same weights.

    Runs on one thread: the convolutions are too small to gain from more, a shared machine makes
    threads wait on each other (20× slower here), and one thread fixes the order of float sums.
    The global RNG and thread count are restored afterwards.
    """
    epochs = max(recipe["min_epochs"], math.ceil(recipe["min_samples_seen"] / len(train)))
    steps = epochs * math.ceil(len(train) / recipe["batch_size"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(recipe["seed"])
            model = build_classifier(train, recipe)
        generator = torch.Generator().manual_seed(recipe["seed"])
        optimizer = torch.optim.AdamW(
            model.parameters(), lr=recipe["learning_rate"], weight_decay=recipe["weight_decay"]
        )
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
        model.train()
        with tqdm(total=steps, desc=f"classifier for {train.spec}", disable=not progress, leave=False) as bar:
            for _ in range(epochs):
                for index in torch.randperm(len(train), generator=generator).split(recipe["batch_size"]):
                    _, logits = model(train.batch(index))
                    loss = F.cross_entropy(logits, train.labels[index])
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    schedule.step()
                    bar.update()
        model.eval().requires_grad_(False)
        model.feature_scale.fill_(_rms_activation(model, train))
    finally:
        torch.set_num_threads(threads)
    return model


@torch.no_grad()
def _rms_activation(model: SmallCNN, dataset: Dataset, batch_size: int = 1000) -> float:
    """√(mean of squared penultimate activations) over a data set."""
    total = sum(
        float(model.hidden_activations(dataset.batch(index)).double().pow(2).sum())
        for index in torch.arange(len(dataset)).split(batch_size)
    )
    return math.sqrt(total / (len(dataset) * model.hidden.out_features))


def classifier_path(data_spec: str, train_fingerprint: str, cache_dir: Path, recipe: dict[str, Any]) -> Path:
    """<cache_dir>/classifiers/<data name>-<fingerprint[:12]>-<recipe version>.safetensors"""
    name = parse_spec(data_spec).name
    return (
        Path(cache_dir) / "classifiers" / f"{name}-{train_fingerprint[:12]}-{recipe['version']}.safetensors"
    )


def load_or_train_classifier(
    data_spec: str,
    *,
    root: str | Path | None = None,
    cache_dir: str | Path | None = None,
    recipe: dict[str, Any] = RECIPE,
    image_size: int | None = None,
    channels: int | None = None,
    progress: bool = False,
) -> TrainedClassifier:
    """The classifier for a data set: loaded from the cache, or trained on the train split and cached.

    The cache lives under `cache_dir`, else the data root (`root`, else ddpm's default data root).
    Training also measures test-split accuracy, stored in the JSON beside the weights. image_size and
    channels resize the data as load_dataset does (a model trained on resized data is measured so).
    """
    train = load_dataset(data_spec, split="train", root=root, image_size=image_size, channels=channels)
    _check_trainable(train)
    cache_root = (
        Path(cache_dir) if cache_dir is not None else Path(root) if root is not None else default_data_root()
    )
    path = classifier_path(data_spec, train.fingerprint, cache_root, recipe)
    meta_path = path.with_suffix(".json")
    if path.is_file() and meta_path.is_file():
        metadata = json.loads(meta_path.read_text())
        model = build_classifier(train, metadata["recipe"])
        model.load_state_dict(load_safetensors(path))  # includes feature_scale
        return TrainedClassifier(model.eval().requires_grad_(False), metadata, path)
    model = train_classifier(train, recipe, progress=progress)
    test = load_dataset(data_spec, split="test", root=root, image_size=image_size, channels=channels)
    metadata = {
        "recipe": recipe,
        "data": parse_spec(data_spec).name,
        "train_fingerprint": train.fingerprint,
        "test_fingerprint": test.fingerprint,
        "sample_shape": list(train.sample_shape),
        "num_classes": train.num_classes,
        "test_accuracy": classifier_accuracy(model, test),
        "feature_scale": float(model.feature_scale),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    # weights first, metadata last: a crash in between leaves no JSON, so the cache is not trusted
    save_file(model.state_dict(), path)
    meta_path.write_text(json.dumps(metadata, indent=2) + "\n")
    return TrainedClassifier(model, metadata, path)
