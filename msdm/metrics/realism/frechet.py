"""The Fréchet distance between two Gaussians fitted to feature sets, in float64, without ``scipy.linalg.sqrtm``.

    FD(F1, F2) = ‖μ1 − μ2‖² + tr Σ1 + tr Σ2 − 2 · tr sqrtm(Σ1 Σ2)

with μ the feature mean and Σ the sample covariance (``np.cov(F, rowvar=False)``, ddof 1). This is FID on Inception
pool features and FBD (Fréchet BiomedCLIP Distance, Prompt to Polyp Table 2–3) on BiomedCLIP features; the MEDVQA-GI
script (``SushantGautam/MedVQA`` ``medvqa/submission_samples/gi-2025/submission_task2.py``, ``fid_score``) computes
it with a full d×d ``sqrtm(sigma1 @ sigma2).real`` for every prompt, which is slow and, for the rank-deficient
covariances of 10 images in 768 dimensions, numerically delicate.

Only the trace of the matrix square root is needed, and Σ1 Σ2 has the same non-zero eigenvalues as a symmetric
positive semi-definite matrix, so two exact routes avoid ``sqrtm``:

* **sample path** (few samples). With centred feature matrices X̃1 (n×d), X̃2 (m×d), Σ1 = AAᵀ and Σ2 = BBᵀ for
  A = X̃1ᵀ/√(n−1), B = X̃2ᵀ/√(m−1). Σ1Σ2 = A·(AᵀBBᵀ) has the non-zero eigenvalues of (AᵀBBᵀ)·A = (AᵀB)(AᵀB)ᵀ,
  the squared singular values of AᵀB, hence
  ``tr sqrtm(Σ1Σ2) = ‖AᵀB‖_* = ‖X̃1 X̃2ᵀ‖_* / √((n−1)(m−1))`` — a nuclear norm (sum of singular values) of an
  n×m matrix instead of a d×d square root.
* **statistics path** (many samples, or when only (μ, Σ) are known). For any factor Σ1 = FFᵀ,
  ``tr sqrtm(Σ1Σ2) = Σ √λᵢ(Fᵀ Σ2 F)`` and Fᵀ Σ2 F is symmetric PSD, so one ``eigvalsh`` gives the trace — stable
  where ``sqrtm`` of a non-symmetric singular product is not. F is the Cholesky factor (cheap) or, for a singular Σ1,
  the symmetric square root from ``eigh`` (k-diffusion's ``k_diffusion/evaluation.py`` ``sqrtm_eig``/``fid`` form
  √Σ1 Σ2 √Σ1, without its ε·I regulariser).

A mixed path handles few samples against known statistics (a cached real set): with Σ1 = AAᵀ,
``tr sqrtm(Σ1Σ2) = Σ √eig(Aᵀ Σ2 A)`` — one n×n eigendecomposition.

:func:`frechet_distance` chooses the cheaper exact route automatically.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "as_float64",
    "feature_statistics",
    "trace_sqrt_product",
    "trace_sqrt_product_from_samples",
    "trace_sqrt_product_samples_stats",
    "frechet_distance",
    "frechet_distance_from_stats",
    "frechet_distance_samples_to_stats",
]


def as_float64(x) -> np.ndarray:
    """A float64 NumPy copy/view of ``x`` (NumPy array, torch tensor on any device, or nested list)."""
    if hasattr(x, "detach"):  # torch.Tensor, without importing torch here
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def _as_features(x, name: str) -> np.ndarray:
    f = as_float64(x)
    if f.ndim != 2:
        raise ValueError(f"{name} must be a 2-D [num_samples, feature_dim] array, got shape {f.shape}")
    if f.shape[0] < 2:
        raise ValueError(
            f"{name} has {f.shape[0]} sample(s): a sample covariance needs at least 2 "
            "(np.cov of one sample is NaN, which is what the reference script would produce)"
        )
    return f


def feature_statistics(feats) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sample covariance (ddof 1, as ``np.cov(feats, rowvar=False)``) of ``[n, d]`` features, in float64."""
    f = _as_features(feats, "feats")
    mu = f.mean(axis=0)
    xc = f - mu
    sigma = xc.T @ xc / (f.shape[0] - 1)
    return mu, sigma


# ----------------------------------------------------------------------------------------------------------------
# tr sqrtm(Σ1 Σ2), three exact ways
# ----------------------------------------------------------------------------------------------------------------


def _psd_clip(eigenvalues: np.ndarray) -> np.ndarray:
    """Eigenvalues of a PSD matrix with round-off removed: values below ``size · eps · λ_max`` become 0.

    A rank-deficient covariance (10 images in 768 dimensions) has hundreds of eigenvalues that are exactly 0 in exact
    arithmetic and ±1e-16·λ_max in floating point. Their square roots (~1e-8·√λ_max each) would add up to a visible
    bias in Σ√λ, so they are zeroed with the usual numerical-rank tolerance (as ``np.linalg.matrix_rank`` uses).
    """
    w = np.asarray(eigenvalues, dtype=np.float64)
    if w.size == 0:
        return w
    tol = float(np.abs(w).max()) * w.size * np.finfo(np.float64).eps
    return np.where(w > tol, w, 0.0)


def _sqrt_sum(eigenvalues: np.ndarray) -> float:
    return float(np.sqrt(_psd_clip(eigenvalues)).sum())


def trace_sqrt_product_from_samples(x1c: np.ndarray, x2c: np.ndarray) -> float:
    """``tr sqrtm(Σ1 Σ2)`` from **centred** samples: ``‖X̃1 X̃2ᵀ‖_* / √((n−1)(m−1))`` (exact; cost O(n·m·d))."""
    n, m = x1c.shape[0], x2c.shape[0]
    singular_values = np.linalg.svd(x1c @ x2c.T, compute_uv=False)
    return float(singular_values.sum()) / math.sqrt((n - 1) * (m - 1))


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """``tr sqrtm(Σ1 Σ2)`` from covariances via a symmetric form with the eigenvalues of Σ1Σ2 (exact; O(d³)).

    With a factor Σ1 = F Fᵀ, Σ1Σ2 has the eigenvalues of the symmetric PSD matrix Fᵀ Σ2 F. F is the Cholesky factor
    when Σ1 is positive definite (one cheap factorisation), else the symmetric square root √Σ1 from ``eigh`` (the
    k-diffusion form √Σ1 Σ2 √Σ1, several times slower, but defined for rank-deficient Σ1).
    """
    try:
        f = np.linalg.cholesky(sigma1)
    except np.linalg.LinAlgError:  # singular (e.g. fewer samples than dimensions)
        w, v = np.linalg.eigh(sigma1)
        f = (v * np.sqrt(_psd_clip(w))) @ v.T
    m = f.T @ sigma2 @ f
    return _sqrt_sum(np.linalg.eigvalsh((m + m.T) / 2))  # symmetrise away round-off before eigvalsh


def trace_sqrt_product_samples_stats(x1c: np.ndarray, sigma2: np.ndarray) -> float:
    """``tr sqrtm(Σ1 Σ2)`` with Σ1 given by centred samples and Σ2 by a matrix: Σ √eig(Aᵀ Σ2 A), A = X̃1ᵀ/√(n−1)."""
    a = x1c.T / math.sqrt(x1c.shape[0] - 1)
    m = a.T @ sigma2 @ a
    return _sqrt_sum(np.linalg.eigvalsh((m + m.T) / 2))


# ----------------------------------------------------------------------------------------------------------------
# Distances
# ----------------------------------------------------------------------------------------------------------------


def _sample_path_is_cheaper(n: int, m: int, d: int) -> bool:
    # Rough flop counts: the sample path is one n×d·d×m product plus an SVD of an n×m matrix; the statistics path
    # builds two d×d covariances and does two d×d eigendecompositions plus two d×d products (~13 d³ in all).
    sample_cost = n * m * (d + 4 * min(n, m))
    stats_cost = (n + m) * d * d + 13 * d**3
    return sample_cost < stats_cost


def frechet_distance(feats1, feats2, method: str = "auto") -> float:
    """Fréchet distance between the Gaussians fitted to two feature sets ``[n, d]`` and ``[m, d]`` (float64).

    ``method``: ``"samples"`` (nuclear-norm path, exact, best when n, m ≲ d), ``"stats"`` (eigendecomposition path,
    best for many samples), or ``"auto"`` (the cheaper one). Both agree with the reference formula using
    ``scipy.linalg.sqrtm`` to ~1e-8 relative, including rank-deficient covariances (n < d).
    """
    f1, f2 = _as_features(feats1, "feats1"), _as_features(feats2, "feats2")
    if f1.shape[1] != f2.shape[1]:
        raise ValueError(f"feature dimensions differ: {f1.shape[1]} vs {f2.shape[1]}")
    n, d = f1.shape
    m = f2.shape[0]
    if method == "auto":
        method = "samples" if _sample_path_is_cheaper(n, m, d) else "stats"
    mu1, mu2 = f1.mean(axis=0), f2.mean(axis=0)
    x1c, x2c = f1 - mu1, f2 - mu2
    if method == "samples":
        tr1 = float(np.einsum("ij,ij->", x1c, x1c)) / (n - 1)  # tr Σ = ‖X̃‖_F² / (n−1)
        tr2 = float(np.einsum("ij,ij->", x2c, x2c)) / (m - 1)
        tr_covmean = trace_sqrt_product_from_samples(x1c, x2c)
    elif method == "stats":
        sigma1, sigma2 = x1c.T @ x1c / (n - 1), x2c.T @ x2c / (m - 1)
        tr1, tr2 = float(np.trace(sigma1)), float(np.trace(sigma2))
        tr_covmean = trace_sqrt_product(sigma1, sigma2)
    else:
        raise ValueError(f"method must be 'auto', 'samples' or 'stats', got {method!r}")
    diff = mu1 - mu2
    return float(diff @ diff) + tr1 + tr2 - 2.0 * tr_covmean


def frechet_distance_from_stats(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet distance from two (mean, covariance) pairs, in float64 (statistics path)."""
    mu1, mu2 = as_float64(mu1).ravel(), as_float64(mu2).ravel()
    sigma1, sigma2 = as_float64(sigma1), as_float64(sigma2)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise ValueError(
            f"inconsistent statistics shapes: mu {mu1.shape}/{mu2.shape}, sigma {sigma1.shape}/{sigma2.shape}"
        )
    diff = mu1 - mu2
    return float(diff @ diff) + float(np.trace(sigma1)) + float(np.trace(sigma2)) - 2.0 * trace_sqrt_product(
        sigma1, sigma2
    )


def frechet_distance_samples_to_stats(feats, mu, sigma) -> float:
    """Fréchet distance between features ``[n, d]`` and a Gaussian known only by (μ, Σ), e.g. cached real stats.

    Uses the exact mixed path (an n×n eigendecomposition) when n < d, else the statistics path.
    """
    f = _as_features(feats, "feats")
    mu, sigma = as_float64(mu).ravel(), as_float64(sigma)
    n, d = f.shape
    if mu.size != d or sigma.shape != (d, d):
        raise ValueError(f"statistics of dimension {mu.size}/{sigma.shape} do not match features of dimension {d}")
    mu1 = f.mean(axis=0)
    x1c = f - mu1
    if n < d:
        tr1 = float(np.einsum("ij,ij->", x1c, x1c)) / (n - 1)
        tr_covmean = trace_sqrt_product_samples_stats(x1c, sigma)
    else:
        sigma1 = x1c.T @ x1c / (n - 1)
        tr1 = float(np.trace(sigma1))
        tr_covmean = trace_sqrt_product(sigma1, sigma)
    diff = mu1 - mu
    return float(diff @ diff) + tr1 + float(np.trace(sigma)) - 2.0 * tr_covmean
