"""Feature-network choice per data set, batched extraction, and the cached real reference."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import ddpm.eval.reference as reference_module
from ddpm.data import load_dataset
from ddpm.eval.classifier import TrainedClassifier
from ddpm.eval.features import default_feature_kind, extract_features, load_feature_net
from ddpm.eval.reference import reference_features, subset_index


@pytest.mark.parametrize(
    ("spec", "kind", "expected"),
    [
        ("digits", "images", "classifier"),
        ("mnist:/somewhere", "images", "classifier"),
        ("fashion-mnist", "images", "classifier"),
        ("cifar10", "images", "inception"),
        ("folder:photos.zip", "images", "inception"),
        ("swissroll", "points", "coords"),
    ],
)
def test_default_feature_network_per_data_set(spec: str, kind: str, expected: str) -> None:
    assert default_feature_kind(spec, kind) == expected


def test_natural_images_need_the_inception_weights_and_get_no_substitute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(
        FileNotFoundError, match=r"pt_inception-2015-12-05-6726825d\.pth not found; download https"
    ):
        load_feature_net("cifar10", "images", root=tmp_path)


def test_unknown_or_mismatched_feature_networks_are_rejected() -> None:
    with pytest.raises(
        ValueError, match="unknown feature network 'vgg'; allowed: auto, classifier, inception, coords"
    ):
        load_feature_net("digits", "images", feature_kind="vgg")
    with pytest.raises(ValueError, match="feature network 'coords' does not apply to images \\('digits'\\)"):
        load_feature_net("digits", "images", feature_kind="coords")
    with pytest.raises(ValueError, match="feature network 'classifier' does not apply to points"):
        load_feature_net("swissroll", "points", feature_kind="classifier")


def test_extraction_does_not_depend_on_the_batch_size(
    digits_classifier: TrainedClassifier, eval_cache: Path
) -> None:
    net = load_feature_net("digits", "images", cache_dir=eval_cache)
    test = load_dataset("digits", split="test")
    feats_small, probs_small = extract_features(net, test.batch, 50, batch_size=7)
    feats_big, probs_big = extract_features(net, test.batch, 50, batch_size=256)
    # float32 convolutions may sum in another order for another batch size: equal to float32 precision
    torch.testing.assert_close(feats_small, feats_big, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(probs_small, probs_big, rtol=1e-5, atol=1e-6)
    assert feats_small.shape == (50, 128) and probs_small.shape == (50, 10)


def test_extraction_rejects_a_bad_batch_size() -> None:
    net = load_feature_net("swissroll", "points")
    with pytest.raises(ValueError, match="batch_size must be >= 1; got 0"):
        extract_features(net, lambda index: torch.zeros(len(index), 2), 10, batch_size=0)


def test_subset_index_is_seeded_sorted_and_distinct() -> None:
    assert torch.equal(subset_index(5, 5, seed=3), torch.arange(5))
    picked = subset_index(100, 30, seed=3)
    assert torch.equal(picked, subset_index(100, 30, seed=3))
    assert len(set(picked.tolist())) == 30 and torch.equal(picked, picked.sort().values)


def test_reference_features_are_cached_per_sample_count(
    digits_classifier: TrainedClassifier, eval_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    net = load_feature_net("digits", "images", cache_dir=eval_cache)
    test = load_dataset("digits", split="test")
    first = reference_features("digits", test, "test", net, 100, eval_cache)
    assert first.path.name == f"digits-{test.fingerprint[:12]}-test-{net.name}-n100.safetensors"
    assert first.features.shape == (100, 128) and first.sigma.shape == (128, 128)

    def no_extraction(*args: object, **kwargs: object) -> None:
        raise AssertionError("cached reference features were recomputed")

    monkeypatch.setattr(reference_module, "extract_features", no_extraction)
    again = reference_features("digits", test, "test", net, 100, eval_cache)
    assert torch.equal(again.features, first.features) and (again.mu == first.mu).all()
    with pytest.raises(AssertionError, match="recomputed"):  # another n is another entry
        reference_features("digits", test, "test", net, 101, eval_cache)


def test_reference_rejects_more_samples_than_the_split_has(eval_cache: Path) -> None:
    net = load_feature_net("swissroll", "points")
    test = load_dataset("swissroll", split="test", num_points=50)
    with pytest.raises(
        ValueError, match="n=51 but the test split of 'swissroll' has 50 samples; use 2 <= n <= 50"
    ):
        reference_features("swissroll", test, "test", net, 51, eval_cache)
