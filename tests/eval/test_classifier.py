"""The package's classifier: accuracy thresholds, determinism, caching by recipe version, bad data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import ddpm.eval.classifier as classifier_module
from ddpm.data import Dataset, load_dataset
from ddpm.eval.classifier import (
    RECIPE,
    TrainedClassifier,
    classifier_accuracy,
    load_or_train_classifier,
    train_classifier,
)

TINY_RECIPE = dict(RECIPE, version="tiny", min_epochs=1, min_samples_seen=0)  # one epoch: a second


def test_digits_classifier_reaches_95_percent_on_the_test_split(digits_classifier: TrainedClassifier) -> None:
    test = load_dataset("digits", split="test")
    accuracy = classifier_accuracy(digits_classifier.model, test)
    assert accuracy >= 0.95
    assert digits_classifier.metadata["test_accuracy"] == pytest.approx(accuracy)


@pytest.mark.slow  # trains on 60,000 images: ≈ 35 s on one free core, up to a minute on a busy machine
def test_mnist_classifier_reaches_98_percent_on_the_test_split(mnist_spec: str, eval_cache: Path) -> None:
    trained = load_or_train_classifier(mnist_spec, cache_dir=eval_cache)  # ≈ 35 s on one core
    assert trained.metadata["test_accuracy"] >= 0.98
    assert trained.path.name.startswith("mnist-") and trained.path.parent == eval_cache / "classifiers"


def test_a_second_call_loads_from_the_cache_without_training(
    digits_classifier: TrainedClassifier, eval_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mtime = digits_classifier.path.stat().st_mtime_ns

    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("the cached classifier was retrained")

    monkeypatch.setattr(classifier_module, "train_classifier", no_training)
    again = load_or_train_classifier("digits", cache_dir=eval_cache)
    assert again.path == digits_classifier.path and again.path.stat().st_mtime_ns == mtime
    for key, value in digits_classifier.model.state_dict().items():
        assert torch.equal(again.model.state_dict()[key], value), key
    assert again.metadata == json.loads(digits_classifier.path.with_suffix(".json").read_text())


def test_cache_file_names_carry_data_fingerprint_and_recipe_version(
    digits_classifier: TrainedClassifier, tmp_path: Path
) -> None:
    fingerprint = load_dataset("digits", split="train").fingerprint
    assert digits_classifier.path.name == f"digits-{fingerprint[:12]}-{RECIPE['version']}.safetensors"
    other = load_or_train_classifier("digits", cache_dir=tmp_path, recipe=TINY_RECIPE)
    assert other.path.name == f"digits-{fingerprint[:12]}-tiny.safetensors"  # a new recipe never reuses
    assert other.metadata["recipe"]["version"] == "tiny"


def test_training_is_deterministic_and_leaves_global_state_alone() -> None:
    train = load_dataset("digits", split="train")
    rng_before, threads_before = torch.random.get_rng_state(), torch.get_num_threads()
    first = train_classifier(train, TINY_RECIPE)
    assert torch.equal(torch.random.get_rng_state(), rng_before)
    assert torch.get_num_threads() == threads_before
    second = train_classifier(train, TINY_RECIPE)
    for key, value in first.state_dict().items():
        assert torch.equal(second.state_dict()[key], value), key


def test_features_are_scaled_to_unit_rms_on_the_train_split(digits_classifier: TrainedClassifier) -> None:
    train = load_dataset("digits", split="train")
    with torch.no_grad():
        feats, logits = digits_classifier.model(train.batch(torch.arange(len(train))))
    assert feats.shape == (len(train), RECIPE["feature_dim"]) and logits.shape == (len(train), 10)
    assert float(feats.pow(2).mean().sqrt()) == pytest.approx(1.0, rel=1e-4)


def test_unlabelled_data_is_rejected() -> None:
    with pytest.raises(ValueError, match="data set 'swissroll' has no labelled images; the classifier needs"):
        load_or_train_classifier("swissroll")


def test_non_square_images_are_rejected() -> None:
    images = Dataset(
        spec="folder:wide",
        kind="images",
        data=torch.zeros(4, 1, 8, 6, dtype=torch.uint8),
        labels=torch.zeros(4, dtype=torch.int64),
        class_names=("a",),
        fingerprint="0" * 64,
    )
    with pytest.raises(
        ValueError, match="classifier needs square images of side >= 4; 'folder:wide' has 8×6"
    ):
        train_classifier(images, TINY_RECIPE)
