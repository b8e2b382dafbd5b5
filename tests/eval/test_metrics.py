"""Metric math: analytic values, independent computations, and every ValueError."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import scipy.spatial.distance
import torch

from ddpm.eval.metrics import (
    class_coverage,
    confidence,
    feature_statistics,
    frechet_distance,
    frechet_distance_from_stats,
    inception_score,
    kernel_inception_distance,
    precision_recall,
    sliced_wasserstein,
    trace_sqrt_product,
    trace_sqrt_product_sqrtm,
)


def _gaussian(n: int, d: int, seed: int, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * scale


def _random_spd(d: int, rng: np.random.Generator) -> np.ndarray:
    m = rng.standard_normal((d, d))
    return m @ m.T / d + 0.1 * np.eye(d)


# ---------------------------------------------------------------- Fréchet distance


def test_fd_of_a_set_with_itself_is_zero() -> None:
    feats = _gaussian(500, 64, seed=0) @ _gaussian(64, 64, seed=1)  # correlated features
    assert frechet_distance(feats, feats) == pytest.approx(0.0, abs=1e-6)


def test_fd_grows_monotonically_with_a_mean_shift() -> None:
    feats = _gaussian(400, 16, seed=2)
    direction = torch.ones(16, dtype=torch.float64) / 4
    shifts = [0.0, 0.1, 0.3, 1.0, 3.0]
    values = [frechet_distance(feats, feats + s * direction) for s in shifts]
    assert all(b > a for a, b in itertools.pairwise(values))
    # a pure shift leaves Σ unchanged, so FD is exactly ‖shift‖²
    assert values[-1] == pytest.approx(float((3.0 * direction).pow(2).sum()), rel=1e-6)


def test_fd_equals_the_closed_form_for_commuting_gaussians() -> None:
    # diagonal Σ commute: tr(Σa + Σb − 2√(ΣaΣb)) = Σ_i (√a_i − √b_i)²
    rng = np.random.default_rng(0)
    d = 32
    mu_a, mu_b = rng.standard_normal(d), rng.standard_normal(d)
    var_a, var_b = rng.uniform(0.1, 3, d), rng.uniform(0.1, 3, d)
    expected = ((mu_a - mu_b) ** 2).sum() + ((np.sqrt(var_a) - np.sqrt(var_b)) ** 2).sum()
    got = frechet_distance_from_stats(mu_a, np.diag(var_a), mu_b, np.diag(var_b))
    assert got == pytest.approx(expected, rel=1e-4)


def test_fd_trace_term_agrees_with_scipy_sqrtm_on_general_covariances() -> None:
    rng = np.random.default_rng(1)
    sigma_a, sigma_b = _random_spd(48, rng), _random_spd(48, rng)
    assert trace_sqrt_product(sigma_a, sigma_b) == pytest.approx(
        trace_sqrt_product_sqrtm(sigma_a, sigma_b), rel=1e-8
    )


def test_fd_of_features_matches_pytorch_fid_formula_with_sqrtm() -> None:
    a, b = _gaussian(300, 20, seed=3), _gaussian(300, 20, seed=4, scale=1.5) + 0.2
    mu_a, sigma_a = np.mean(a.numpy(), 0), np.cov(a.numpy(), rowvar=False)
    mu_b, sigma_b = np.mean(b.numpy(), 0), np.cov(b.numpy(), rowvar=False)
    independent = (
        ((mu_a - mu_b) ** 2).sum()
        + np.trace(sigma_a)
        + np.trace(sigma_b)
        - 2 * trace_sqrt_product_sqrtm(sigma_a, sigma_b)
    )
    assert frechet_distance(a, b) == pytest.approx(independent, rel=1e-4)


def test_feature_statistics_are_mean_and_unbiased_covariance() -> None:
    feats = _gaussian(50, 3, seed=5)
    mu, sigma = feature_statistics(feats)
    centred = feats.numpy() - feats.numpy().mean(0)
    np.testing.assert_allclose(mu, feats.numpy().mean(0))
    np.testing.assert_allclose(sigma, centred.T @ centred / 49)


def test_fd_rejects_mismatched_dimensions() -> None:
    with pytest.raises(ValueError, match="feature dimensions differ: 4 vs 5"):
        frechet_distance(_gaussian(10, 4, 0), _gaussian(10, 5, 1))


def test_fd_rejects_non_2d_features() -> None:
    with pytest.raises(
        ValueError, match=r"feats_a must be a 2-D \(N >= 2, D\) feature array; got shape \(10,\)"
    ):
        frechet_distance(torch.zeros(10), _gaussian(10, 5, 1))


def test_fd_from_stats_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="statistics shapes do not match"):
        frechet_distance_from_stats(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


# ---------------------------------------------------------------- KID


def _mmd2_unbiased_loops(x: np.ndarray, y: np.ndarray) -> float:
    """Straight from the definition, one pair at a time (Gretton et al. 2012, eq. 3)."""
    d = x.shape[1]
    k = lambda u, v: (u @ v / d + 1) ** 3  # noqa: E731
    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def test_kid_agrees_with_a_pairwise_loop() -> None:
    a, b = _gaussian(40, 6, seed=6), _gaussian(40, 6, seed=7, scale=1.3) + 0.3
    # one subset covering the whole set: MMD² does not depend on the order of the samples
    mean, std = kernel_inception_distance(a, b, num_subsets=1, subset_size=1000)
    assert mean == pytest.approx(_mmd2_unbiased_loops(a.numpy(), b.numpy()), rel=1e-4)
    assert std == 0.0


def test_kid_is_unbiased_on_two_samples_of_one_distribution() -> None:
    unbiased, biased = [], []
    for draw in range(200):
        a, b = _gaussian(60, 4, seed=2 * draw), _gaussian(60, 4, seed=2 * draw + 1)
        unbiased.append(kernel_inception_distance(a, b, num_subsets=1, subset_size=60)[0])
        # the V-statistic (diagonals kept) is biased upward by (E k(x,x) − E k(x,y)) · 2 / m
        k = lambda u, v: (u @ v.T / 4 + 1) ** 3  # noqa: E731
        biased.append(float(k(a, a).mean() + k(b, b).mean() - 2 * k(a, b).mean()))
    standard_error = np.std(unbiased) / math.sqrt(len(unbiased))
    assert abs(np.mean(unbiased)) < 3 * standard_error
    assert np.mean(biased) > 10 * standard_error  # the check can tell a biased estimator apart


def test_kid_separates_different_distributions() -> None:
    a, b = _gaussian(300, 8, seed=8), _gaussian(300, 8, seed=9) + 1.0
    same = kernel_inception_distance(a, _gaussian(300, 8, seed=10), num_subsets=20, subset_size=100)[0]
    different = kernel_inception_distance(a, b, num_subsets=20, subset_size=100)[0]
    assert different > 10 * abs(same)


def test_kid_is_reproducible_for_a_seed() -> None:
    a, b = _gaussian(200, 8, seed=11), _gaussian(200, 8, seed=12)
    first = kernel_inception_distance(a, b, num_subsets=5, subset_size=50, seed=3)
    assert kernel_inception_distance(a, b, num_subsets=5, subset_size=50, seed=3) == first


def test_kid_rejects_bad_subset_arguments() -> None:
    a = _gaussian(20, 3, 0)
    with pytest.raises(ValueError, match="num_subsets must be >= 1 and subset_size >= 2; got 0, 10"):
        kernel_inception_distance(a, a, num_subsets=0, subset_size=10)


# ---------------------------------------------------------------- precision and recall


def test_precision_and_recall_of_a_set_against_itself_are_one() -> None:
    feats = _gaussian(300, 10, seed=13)
    assert precision_recall(feats, feats, k=3) == (1.0, 1.0)


def _precision_recall_brute_force(real: np.ndarray, fake: np.ndarray, k: int) -> tuple[float, float]:
    def radii(x: np.ndarray) -> np.ndarray:
        return np.sort(scipy.spatial.distance.cdist(x, x), axis=1)[:, k]

    def inside(manifold: np.ndarray, r: np.ndarray, queries: np.ndarray) -> float:
        return float((scipy.spatial.distance.cdist(queries, manifold) <= r[None, :]).any(1).mean())

    return inside(real, radii(real), fake), inside(fake, radii(fake), real)


def test_precision_recall_match_a_brute_force_computation_across_batches() -> None:
    real, fake = _gaussian(250, 5, seed=14), _gaussian(230, 5, seed=15, scale=0.6) + 0.5
    expected = _precision_recall_brute_force(real.numpy(), fake.numpy(), k=3)
    got = precision_recall(real, fake, k=3, batch_size=64)  # several distance blocks
    assert got == pytest.approx(expected, abs=1e-9)
    assert 0.0 < got[0] < 1.0 and 0.0 < got[1] < 1.0


def test_a_collapsed_fake_set_has_high_precision_and_low_recall() -> None:
    real, fake = _gaussian(500, 4, seed=16), _gaussian(500, 4, seed=17, scale=0.2)
    precision, recall = precision_recall(real, fake)
    assert precision > 0.95 and recall < 0.3


def test_precision_recall_rejects_k_out_of_range() -> None:
    feats = _gaussian(5, 2, 0)
    with pytest.raises(ValueError, match=r"k must be in \[1, 4\] for 5 points; got 5"):
        precision_recall(feats, feats, k=5)


# ---------------------------------------------------------------- Inception score and class statistics


def test_inception_score_of_uniform_predictions_is_one() -> None:
    probs = torch.full((100, 10), 0.1)
    assert inception_score(probs, splits=10) == pytest.approx((1.0, 0.0), abs=1e-9)


def test_inception_score_of_confident_balanced_predictions_is_num_classes() -> None:
    probs = torch.eye(10).repeat(20, 1)  # each split of 20 holds every class twice
    assert inception_score(probs, splits=10) == pytest.approx((10.0, 0.0), abs=1e-9)


def test_inception_score_matches_numpy_per_split_formula() -> None:
    rng = np.random.default_rng(2)
    probs = rng.dirichlet(np.full(7, 0.3), size=90)
    expected = []
    for chunk in np.array_split(probs, 3):
        kl = (chunk * (np.log(chunk) - np.log(chunk.mean(0, keepdims=True)))).sum(1)
        expected.append(np.exp(kl.mean()))
    assert inception_score(probs, splits=3) == pytest.approx((np.mean(expected), np.std(expected)), rel=1e-9)


def test_inception_score_rejects_logits() -> None:
    with pytest.raises(
        ValueError, match=r"probs rows must be non-negative and sum to 1; pass softmax\(logits\)"
    ):
        inception_score(torch.randn(20, 10))


def test_inception_score_rejects_bad_splits_and_shapes() -> None:
    with pytest.raises(ValueError, match=r"splits must be in \[1, 5\] for 5 samples; got 6"):
        inception_score(torch.full((5, 2), 0.5), splits=6)
    with pytest.raises(ValueError, match=r"probs must be 2-D \(N, num_classes\); got shape \(5,\)"):
        inception_score(torch.full((5,), 0.2))


def test_class_coverage_counts_classes_with_enough_confident_samples() -> None:
    confident = torch.eye(4, dtype=torch.float64)  # row c: class c with probability 1
    unsure = torch.tensor([[0.0, 0.0, 0.6, 0.4]], dtype=torch.float64)
    # 100 samples → a class needs 0.1 · 100 / 4 = 2.5, so 3 confident samples
    probs = torch.cat([confident[[0] * 50 + [1] * 3 + [2] * 2], unsure.repeat(45, 1)])
    assert class_coverage(probs) == pytest.approx(0.5)  # classes 0 and 1
    assert class_coverage(probs, confident_prob=0.5) == pytest.approx(0.75)  # the unsure ones count for 2
    assert class_coverage(probs, confident_prob=0.0, min_share=0.0) == pytest.approx(0.75)


def test_class_coverage_rejects_labels_instead_of_probabilities() -> None:
    with pytest.raises(ValueError, match=r"probs must be 2-D \(N, num_classes\); got shape \(2,\)"):
        class_coverage(torch.tensor([0.0, 3.0]))


def test_confidence_fraction_and_mean() -> None:
    probs = torch.tensor([[0.95, 0.05], [0.5, 0.5], [0.08, 0.92]])
    fraction, mean_top = confidence(probs, threshold=0.9)
    assert fraction == pytest.approx(2 / 3)
    assert mean_top == pytest.approx((0.95 + 0.5 + 0.92) / 3)


# ---------------------------------------------------------------- sliced Wasserstein


def test_sliced_wasserstein_of_a_shift_is_its_length_over_sqrt_d() -> None:
    # every projection of a shifted copy moves by θ·δ, and E(θ·δ)² = ‖δ‖²/D
    points = _gaussian(1000, 2, seed=18)
    shift = torch.tensor([3.0, 4.0], dtype=torch.float64)
    assert sliced_wasserstein(points, points) == pytest.approx(0.0, abs=1e-12)
    assert sliced_wasserstein(points, points + shift, num_projections=2000) == pytest.approx(
        5.0 / math.sqrt(2), rel=0.03
    )


def test_sliced_wasserstein_handles_sets_of_different_sizes() -> None:
    a, b = _gaussian(2000, 2, seed=19), _gaussian(1500, 2, seed=20)
    assert sliced_wasserstein(a, b) < 0.1
    assert sliced_wasserstein(a, b * 2) > 0.5
