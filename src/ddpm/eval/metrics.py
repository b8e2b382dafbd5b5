"""Sample-quality metrics over feature sets: FD, KID, improved precision/recall, IS, SWD, class stats.

Every function takes plain tensors (features, probabilities, labels or points), so it works with any
feature network. Distances and moments are accumulated in float64: FD and KID are small differences
of large numbers and lose their digits in float32.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.linalg
import torch
from torch import Tensor


def _as_float64_2d(name: str, feats: Tensor | np.ndarray) -> Tensor:
    x = torch.as_tensor(feats).detach().to("cpu", torch.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"{name} must be a 2-D (N >= 2, D) feature array; got shape {tuple(x.shape)}")
    return x


def _check_same_dim(a: Tensor, b: Tensor) -> None:
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature dimensions differ: {a.shape[1]} vs {b.shape[1]}; use one feature network")


def feature_statistics(feats: Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean μ (D,) and unbiased covariance Σ (D, D) of features, in float64."""
    x = _as_float64_2d("feats", feats).numpy()
    return x.mean(axis=0), np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1])


def trace_sqrt_product(sigma_a: np.ndarray, sigma_b: np.ndarray) -> float:
    """tr √(Σ_a Σ_b) through the symmetric form √Σ_a Σ_b √Σ_a, whose eigenvalues are real and ≥ 0.

    Σ_a Σ_b is similar to √Σ_a Σ_b √Σ_a, so they share eigenvalues; working with the symmetric
    matrix avoids the spurious imaginary parts that scipy.linalg.sqrtm produces on near-singular
    covariances (pytorch-fid's `offset` workaround), and eigh is faster than sqrtm.
    """
    eigval_a, eigvec_a = np.linalg.eigh(sigma_a)
    sqrt_a = (eigvec_a * np.sqrt(np.clip(eigval_a, 0, None))) @ eigvec_a.T  # (D, D)
    middle = sqrt_a @ sigma_b @ sqrt_a
    eigval = np.linalg.eigvalsh((middle + middle.T) / 2)  # symmetrise away round-off
    return float(np.sqrt(np.clip(eigval, 0, None)).sum())


def trace_sqrt_product_sqrtm(sigma_a: np.ndarray, sigma_b: np.ndarray) -> float:
    """tr √(Σ_a Σ_b) via scipy.linalg.sqrtm, dropping imaginary round-off (pytorch-fid's route).

    Kept as an independent cross-check of `trace_sqrt_product`; raises when the imaginary part is
    not round-off.
    """
    covmean = scipy.linalg.sqrtm(sigma_a @ sigma_b)
    if not np.isfinite(covmean).all():  # singular product: nudge both diagonals, as pytorch-fid does
        offset = np.eye(sigma_a.shape[0]) * 1e-6
        covmean = scipy.linalg.sqrtm((sigma_a + offset) @ (sigma_b + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ArithmeticError(f"sqrtm has imaginary part {np.abs(covmean.imag).max():.3g}")
        covmean = covmean.real
    return float(np.trace(covmean))


def frechet_distance_from_stats(
    mu_a: np.ndarray, sigma_a: np.ndarray, mu_b: np.ndarray, sigma_b: np.ndarray
) -> float:
    """Fréchet distance between N(μ_a, Σ_a) and N(μ_b, Σ_b) (Heusel et al. 2017, eq. 6; Dowson & Landau 1982).

    d² = ‖μ_a − μ_b‖² + tr(Σ_a + Σ_b − 2 √(Σ_a Σ_b)). Returned as d² (what papers call FID).
    """
    mu_a, mu_b = np.asarray(mu_a, np.float64), np.asarray(mu_b, np.float64)
    sigma_a, sigma_b = np.asarray(sigma_a, np.float64), np.asarray(sigma_b, np.float64)
    if mu_a.shape != mu_b.shape or sigma_a.shape != sigma_b.shape or sigma_a.shape != mu_a.shape * 2:
        raise ValueError(
            f"statistics shapes do not match: mu {mu_a.shape} vs {mu_b.shape}, "
            f"sigma {sigma_a.shape} vs {sigma_b.shape}"
        )
    mean_term = float(((mu_a - mu_b) ** 2).sum())
    trace_term = float(np.trace(sigma_a) + np.trace(sigma_b)) - 2 * trace_sqrt_product(sigma_a, sigma_b)
    return max(mean_term + trace_term, 0.0)  # ≥ 0 exactly; clip round-off below zero


def frechet_distance(feats_a: Tensor | np.ndarray, feats_b: Tensor | np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (FID when features are Inception's)."""
    a, b = _as_float64_2d("feats_a", feats_a), _as_float64_2d("feats_b", feats_b)
    _check_same_dim(a, b)
    return frechet_distance_from_stats(*feature_statistics(a), *feature_statistics(b))


def polynomial_kernel(x: Tensor, y: Tensor) -> Tensor:
    """KID's cubic kernel k(x, y) = (x·y / d + 1)³ (Bińkowski et al. 2018, sec. 3), batched over lead dims."""
    return (x @ y.transpose(-1, -2) / x.shape[-1] + 1) ** 3


def mmd2_unbiased(x: Tensor, y: Tensor) -> Tensor:
    """Unbiased MMD² estimate with the cubic kernel (Gretton et al. 2012, eq. 3; Bińkowski et al. 2018).

    x (..., m, d), y (..., n, d) → (...). Diagonal terms k(x_i, x_i) are left out of the within-set
    means; the cross term averages all m·n pairs (x and y are independent, so it has no diagonal).
    """
    m, n = x.shape[-2], y.shape[-2]
    k_xx, k_yy, k_xy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    within_x = (k_xx.sum((-1, -2)) - k_xx.diagonal(dim1=-2, dim2=-1).sum(-1)) / (m * (m - 1))
    within_y = (k_yy.sum((-1, -2)) - k_yy.diagonal(dim1=-2, dim2=-1).sum(-1)) / (n * (n - 1))
    return within_x + within_y - 2 * k_xy.mean((-1, -2))


def kernel_inception_distance(
    feats_a: Tensor | np.ndarray,
    feats_b: Tensor | np.ndarray,
    *,
    num_subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """KID: mean and std of the unbiased MMD² over random subsets (Bińkowski et al. 2018).

    Subsets of min(subset_size, N_a, N_b) are drawn without replacement, independently per subset,
    from a seeded generator, as in the reference implementation. When both sets are no larger than
    subset_size every subset is the whole of both, so MMD² is computed once and the std is 0.
    """
    if num_subsets < 1 or subset_size < 2:
        raise ValueError(f"num_subsets must be >= 1 and subset_size >= 2; got {num_subsets}, {subset_size}")
    a, b = _as_float64_2d("feats_a", feats_a), _as_float64_2d("feats_b", feats_b)
    _check_same_dim(a, b)
    size = min(subset_size, a.shape[0], b.shape[0])
    if size == a.shape[0] == b.shape[0]:  # every subset is the whole of both sets: one value, std 0
        return float(mmd2_unbiased(a, b)), 0.0
    generator = torch.Generator().manual_seed(seed)
    index_a = torch.stack(
        [torch.randperm(a.shape[0], generator=generator)[:size] for _ in range(num_subsets)]
    )
    index_b = torch.stack(
        [torch.randperm(b.shape[0], generator=generator)[:size] for _ in range(num_subsets)]
    )
    # several subsets per batched matmul, ≤ 2²² kernel entries (32 MiB of float64) per matrix
    per_chunk = max(1, 2**22 // (size * size))
    values = torch.cat(
        [
            mmd2_unbiased(a[ia], b[ib])
            for ia, ib in zip(index_a.split(per_chunk), index_b.split(per_chunk), strict=True)
        ]
    )
    return float(values.mean()), float(values.std(unbiased=False))


def _pairwise_sq_dists(x: Tensor, y: Tensor) -> Tensor:
    """‖x_i − y_j‖² (Nx, Ny) by the matmul expansion, clipped at 0 against round-off."""
    sq = (x * x).sum(1, keepdim=True) - 2 * x @ y.T + (y * y).sum(1)
    return sq.clamp_min_(0)


def knn_radii(feats: Tensor, k: int, batch_size: int = 1024) -> Tensor:
    """Squared distance from each point to its k-th nearest other point (the point itself excluded)."""
    if not 1 <= k < feats.shape[0]:
        raise ValueError(f"k must be in [1, {feats.shape[0] - 1}] for {feats.shape[0]} points; got {k}")
    radii = []
    for start in range(0, feats.shape[0], batch_size):
        sq = _pairwise_sq_dists(feats[start : start + batch_size], feats)  # (B, N)
        # the k+1 smallest include the point itself at distance 0
        radii.append(sq.topk(k + 1, dim=1, largest=False).values[:, k])
    return torch.cat(radii)


def manifold_coverage(manifold: Tensor, radii_sq: Tensor, queries: Tensor, batch_size: int = 1024) -> float:
    """Fraction of queries inside ∪_i B(manifold_i, radius_i), f(φ, Φ) of Kynkäänniemi et al. 2019, sec. 2."""
    inside = []
    for start in range(0, queries.shape[0], batch_size):
        sq = _pairwise_sq_dists(queries[start : start + batch_size], manifold)  # (B, M)
        inside.append((sq <= radii_sq).any(dim=1))
    return float(torch.cat(inside).double().mean())


def precision_recall(
    real: Tensor | np.ndarray, fake: Tensor | np.ndarray, *, k: int = 3, batch_size: int = 1024
) -> tuple[float, float]:
    """Improved precision and recall with k-NN manifolds (Kynkäänniemi et al. 2019, sec. 2).

    Precision: the fraction of fake samples inside the real manifold; recall: the fraction of real
    samples inside the fake manifold. Each manifold is the union of balls reaching every point's k-th
    nearest neighbour (k = 3 in the paper). Distances are computed in blocks of `batch_size` rows, so
    10k × 10k sets need only batch_size × 10k floats at a time.
    """
    real_t = _as_float64_2d("real", real).float()
    fake_t = _as_float64_2d("fake", fake).float()
    _check_same_dim(real_t, fake_t)
    real_radii, fake_radii = knn_radii(real_t, k, batch_size), knn_radii(fake_t, k, batch_size)
    precision = manifold_coverage(real_t, real_radii, fake_t, batch_size)
    recall = manifold_coverage(fake_t, fake_radii, real_t, batch_size)
    return precision, recall


def _check_probs(probs: Tensor | np.ndarray) -> Tensor:
    p = torch.as_tensor(probs).detach().to("cpu", torch.float64)
    if p.ndim != 2:
        raise ValueError(f"probs must be 2-D (N, num_classes); got shape {tuple(p.shape)}")
    if (p < 0).any() or not torch.allclose(p.sum(1), torch.ones(p.shape[0], dtype=p.dtype), atol=1e-4):
        raise ValueError("probs rows must be non-negative and sum to 1; pass softmax(logits)")
    return p


def inception_score(probs: Tensor | np.ndarray, *, splits: int = 10) -> tuple[float, float]:
    """IS = exp(E_x KL(p(y|x) ‖ p(y))), mean and std over `splits` chunks (Salimans et al. 2016, sec. 4).

    p(y) is the mean prediction within each chunk, as in the original code. Uniform predictions give
    1; confident predictions spread evenly over C classes give C.
    """
    p = _check_probs(probs)
    if not 1 <= splits <= p.shape[0]:
        raise ValueError(f"splits must be in [1, {p.shape[0]}] for {p.shape[0]} samples; got {splits}")
    scores = []
    for chunk in torch.tensor_split(p, splits):
        marginal = chunk.mean(0, keepdim=True)  # p(y) over this chunk
        # 0·log 0 = 0: xlogy handles zero probabilities exactly
        kl = (torch.xlogy(chunk, chunk) - torch.xlogy(chunk, marginal)).sum(1)
        scores.append(math.exp(float(kl.mean())))
    scores_np = np.asarray(scores)
    return float(scores_np.mean()), float(scores_np.std())


def class_coverage(
    probs: Tensor | np.ndarray, *, confident_prob: float = 0.9, min_share: float = 0.1
) -> float:
    """Fraction of classes of which the samples hold enough recognisable examples.

    A class counts when at least max(1, min_share · N / C) samples are classified into it with
    probability ≥ confident_prob: neither a stray misclassified sample nor a heap of unrecognisable
    ones (noise spreads its argmax over every class) makes a class covered. confident_prob = 0 and
    min_share = 0 count any argmax at all.
    """
    p = _check_probs(probs)
    top, label = p.max(dim=1)
    counts = torch.bincount(label[top >= confident_prob], minlength=p.shape[1])
    needed = max(1.0, min_share * p.shape[0] / p.shape[1])
    return float((counts >= needed).double().mean())


def confidence(probs: Tensor | np.ndarray, *, threshold: float = 0.9) -> tuple[float, float]:
    """Fraction of samples whose top class probability is ≥ threshold, and the mean top probability."""
    top = _check_probs(probs).max(dim=1).values
    return float((top >= threshold).double().mean()), float(top.mean())


def _quantiles(proj_a: Tensor, proj_b: Tensor) -> tuple[Tensor, Tensor]:
    """Matching quantiles of two projected sets (N, P): sorted values when N agree, else interpolated."""
    if proj_a.shape[0] == proj_b.shape[0]:
        return proj_a.sort(dim=0).values, proj_b.sort(dim=0).values
    num_levels = max(proj_a.shape[0], proj_b.shape[0])
    levels = (torch.arange(num_levels, dtype=torch.float64) + 0.5) / num_levels  # bin midpoints
    return torch.quantile(proj_a, levels, dim=0), torch.quantile(proj_b, levels, dim=0)


def sliced_wasserstein(
    a: Tensor | np.ndarray, b: Tensor | np.ndarray, *, num_projections: int = 256, seed: int = 0
) -> float:
    """Sliced 2-Wasserstein distance (Rabin et al. 2011; Bonneel et al. 2015).

    SW₂(a, b) = (E_θ W₂²(θ·a, θ·b))^½ over directions θ uniform on the unit sphere (Monte Carlo with
    `num_projections` seeded directions). The 1-D W₂ compares quantile functions, evaluated at the
    midpoints of max(N_a, N_b) equal bins, so the two sets may differ in size.
    """
    x, y = _as_float64_2d("a", a), _as_float64_2d("b", b)
    _check_same_dim(x, y)
    generator = torch.Generator().manual_seed(seed)
    theta = torch.randn(x.shape[1], num_projections, generator=generator, dtype=torch.float64)
    theta = theta / theta.norm(dim=0, keepdim=True)  # (D, P) unit directions
    qx, qy = _quantiles(x @ theta, y @ theta)  # (L, P) each
    return float(((qx - qy) ** 2).mean().sqrt())
