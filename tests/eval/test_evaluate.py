"""evaluate() and real_floor(): real data scores near the floor, noise far worse; every user error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ddpm.data import load_dataset
from ddpm.eval.classifier import TrainedClassifier
from ddpm.eval.evaluate import evaluate, higher_is_better, prepare, real_floor, score
from ddpm.eval.reference import subset_index
from ddpm.eval.samples import load_samples_npz

N_DIGITS = 297  # the whole digits test split


@pytest.fixture(scope="module")
def digits_floor(digits_classifier: TrainedClassifier, eval_cache: Path) -> dict[str, float]:
    return real_floor("digits", N_DIGITS, cache_dir=eval_cache, progress=False)


def _real_train_digits(seed: int) -> torch.Tensor:
    train = load_dataset("digits", split="train")
    return train.batch(subset_index(len(train), N_DIGITS, seed))


def test_real_floor_reports_every_classifier_metric(digits_floor: dict[str, float]) -> None:
    assert set(digits_floor) == {
        "n", "fd_classifier", "kid_classifier", "kid_classifier_std", "precision", "recall",
        "is_classifier", "is_classifier_std", "class_coverage", "confidence", "mean_max_prob",
    }  # fmt: skip
    assert digits_floor["n"] == N_DIGITS
    assert digits_floor["class_coverage"] == 1.0 and digits_floor["precision"] > 0.8


def test_other_real_digits_score_near_the_floor_and_noise_far_worse(
    digits_floor: dict[str, float], eval_cache: Path
) -> None:
    real = evaluate(_real_train_digits(seed=1), "digits", cache_dir=eval_cache, progress=False)
    noise = torch.rand(N_DIGITS, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    bad = evaluate(noise, "digits", cache_dir=eval_cache, progress=False)
    assert real["fd_classifier"] < 2 * digits_floor["fd_classifier"]
    assert bad["fd_classifier"] > 20 * digits_floor["fd_classifier"]
    assert bad["kid_classifier"] > 20 * abs(digits_floor["kid_classifier"])
    assert abs(real["kid_classifier"]) < 3 * abs(digits_floor["kid_classifier"]) + 0.01
    for key in ("precision", "recall", "is_classifier", "confidence", "mean_max_prob"):
        assert real[key] > 0.8 * digits_floor[key], key
    assert bad["precision"] < 0.1 and bad["recall"] < 0.1
    assert bad["is_classifier"] < 0.6 * digits_floor["is_classifier"]
    assert bad["confidence"] < 0.5 * digits_floor["confidence"]
    assert bad["class_coverage"] <= digits_floor["class_coverage"]


def test_points_are_measured_on_their_coordinates(eval_cache: Path) -> None:
    real = load_dataset("swissroll", split="train").batch(torch.arange(1000))
    noise = torch.randn(1000, 2, generator=torch.Generator().manual_seed(0)) * 0.5
    good = evaluate(real, "swissroll", cache_dir=eval_cache, progress=False)
    bad = evaluate(noise, "swissroll", cache_dir=eval_cache, progress=False)
    assert set(good) == {"n", "fd_coords", "kid_coords", "kid_coords_std", "precision", "recall", "swd"}
    for key in ("fd_coords", "kid_coords", "swd"):
        assert bad[key] > 5 * abs(good[key]), key
    assert bad["precision"] < 0.5 < good["precision"]


def test_uint8_npz_samples_score_like_the_float_samples_they_came_from(
    eval_cache: Path, tmp_path: Path
) -> None:
    floats = (
        torch.rand(40, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2.2 - 1.1
    )  # some out of range
    uint8 = ((floats.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1)  # (N, H, W, C)
    np.savez(tmp_path / "samples.npz", images=uint8.numpy(), labels=np.arange(40))
    loaded, labels = load_samples_npz(tmp_path / "samples.npz")
    assert loaded.shape == (40, 1, 8, 8) and torch.equal(labels, torch.arange(40))
    kwargs = {"metrics": ["fd", "precision", "is"], "cache_dir": eval_cache, "progress": False}
    from_float = evaluate(floats, "digits", **kwargs)
    assert evaluate(uint8, "digits", **kwargs) == from_float
    assert evaluate(loaded, "digits", **kwargs) == from_float
    assert set(from_float) == {"n", "fd_classifier", "precision", "is_classifier", "is_classifier_std"}


def test_prepare_once_then_score_many(eval_cache: Path) -> None:
    evaluation = prepare("digits", 100, metrics=["fd", "kid"], cache_dir=eval_cache)
    first = score(evaluation, _real_train_digits(seed=2))
    assert score(evaluation, _real_train_digits(seed=2)) == first
    assert score(evaluation, torch.zeros(100, 1, 8, 8))["fd_classifier"] > first["fd_classifier"]


def test_a_progress_bar_shows_feature_extraction(
    eval_cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    evaluate(torch.zeros(20, 1, 8, 8), "digits", metrics=["fd"], cache_dir=eval_cache, progress=True)
    assert "features (samples)" in capsys.readouterr().err


def test_which_keys_are_better_higher() -> None:
    for key in (
        "precision",
        "recall",
        "is",
        "is_classifier",
        "class_coverage",
        "confidence",
        "mean_max_prob",
    ):
        assert higher_is_better(key), key
    for key in ("fid", "fd_classifier", "fd_coords", "kid", "kid_classifier", "kid_coords", "swd"):
        assert not higher_is_better(key), key


# ---------------------------------------------------------------- user errors


def test_unknown_metrics_are_named_with_the_allowed_ones() -> None:
    with pytest.raises(
        ValueError, match=r"unknown metric\(s\) 'fid'; allowed: fd, kid, precision, recall, is, "
    ):
        evaluate(torch.zeros(4, 1, 8, 8), "digits", metrics=["fd", "fid"])


def test_metrics_must_be_a_list() -> None:
    with pytest.raises(ValueError, match="metrics must be a non-empty list of names; got 'fd'"):
        evaluate(torch.zeros(4, 1, 8, 8), "digits", metrics="fd")


def test_metrics_that_do_not_apply_to_the_features_are_refused(eval_cache: Path) -> None:
    with pytest.raises(
        ValueError, match=r"metric\(s\) 'swd' do not apply to classifier features; allowed: fd"
    ):
        evaluate(torch.zeros(4, 1, 8, 8), "digits", metrics=["swd"], cache_dir=eval_cache)
    with pytest.raises(ValueError, match=r"metric\(s\) 'is', 'coverage' do not apply to coords features"):
        evaluate(torch.zeros(4, 2), "swissroll", metrics=["is", "coverage"], cache_dir=eval_cache)


def test_n_larger_than_the_samples_is_refused() -> None:
    with pytest.raises(ValueError, match="n=11 but only 10 samples were given; use 2 <= n <= 10"):
        evaluate(torch.zeros(10, 1, 8, 8), "digits", n=11)


def test_n_larger_than_the_real_split_is_refused() -> None:
    with pytest.raises(
        ValueError, match="n=298 but the test split of 'digits' has 297 samples; use 2 <= n <= 297"
    ):
        evaluate(torch.zeros(300, 1, 8, 8), "digits", n=298)


def test_real_floor_refuses_n_larger_than_the_train_split() -> None:
    with pytest.raises(ValueError, match="n=1501 is more than the 1500 train samples of 'digits'"):
        real_floor("digits", 1501)


def test_samples_must_match_the_data_shape() -> None:
    with pytest.raises(
        ValueError, match=r"samples have shape \(3, 8, 8\) but 'digits' has \(1, 8, 8\); generate"
    ):
        evaluate(torch.zeros(10, 3, 8, 8), "digits")
    with pytest.raises(ValueError, match=r"samples have shape \(1, 8, 8\) but 'swissroll' has \(2,\)"):
        evaluate(torch.zeros(10, 1, 8, 8), "swissroll")


def test_samples_of_the_wrong_type_or_rank_are_refused() -> None:
    with pytest.raises(ValueError, match=r"samples must be uint8 images or float tensors; got torch\.int64"):
        evaluate(torch.zeros(10, 2, dtype=torch.int64), "swissroll")
    with pytest.raises(
        ValueError, match=r"samples must be images \(N, C, H, W\) or points \(N, 2\); got shape"
    ):
        evaluate(torch.zeros(10, 8, 8), "digits")
    with pytest.raises(
        ValueError, match=r"uint8 images must be \(N, H, W, C\) with C in \(1, 3\); got shape"
    ):
        evaluate(torch.zeros(10, 1, 8, 8, dtype=torch.uint8), "digits")


def test_bad_samples_files_are_refused(tmp_path: Path) -> None:
    np.savez(tmp_path / "empty.npz", labels=np.zeros(3))
    with pytest.raises(
        ValueError, match=r"must hold exactly one of 'images' or 'points'; it holds \['labels'\]"
    ):
        load_samples_npz(tmp_path / "empty.npz")
    np.savez(tmp_path / "labels.npz", points=np.zeros((3, 2), np.float32), labels=np.zeros(4))
    with pytest.raises(ValueError, match=r"labels have shape \(4,\), expected \(3,\)"):
        load_samples_npz(tmp_path / "labels.npz")
