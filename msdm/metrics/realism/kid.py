"""Kernel Inception Distance (Bińkowski et al. 2018): the unbiased MMD² with a cubic polynomial kernel.

    k(x, y) = (γ x·y + c)^degree,  γ = 1/d, c = 1, degree 3   (Bińkowski et al. 2018, §3; torchmetrics' defaults)

    MMD²_u = 1/(n(n−1)) Σ_{i≠i'} k(x_i, x_i') + 1/(m(m−1)) Σ_{j≠j'} k(y_j, y_j') − 2/(nm) Σ_{i,j} k(x_i, y_j)

Unlike FID, the estimator is unbiased at every sample size (n, m ≥ 2), so KIDs measured on different numbers of
images estimate the same quantity — which makes it the distance to prefer at the sample sizes of this field (a few
hundred real frames). Its variance is large at small n, though, so a KID is reported with a standard error:

* **whole sets** (default when the kernel matrices fit, n + m ≤ ``FULL_SET_LIMIT``): the estimator above on all
  images, with unequal n and m, and a two-sample **jackknife** standard error (delete-one over real and over
  generated images; consistent for U-statistics, Arvesen 1969). The leave-one-out values come from kernel row sums,
  so the error costs nothing beyond the kernel matrices.
* **subsets** (Bińkowski et al.'s protocol and torchmetrics' ``KernelInceptionDistance``: ``subsets`` random draws of
  ``subset_size`` images from each side, equal sizes): the mean over subsets and their standard deviation
  (population, as torchmetrics). With ``torch.Generator`` seeded like torchmetrics' global RNG the draws are the
  same, and so are the numbers (tests/test_metrics_kid.py).

Everything is float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from msdm.metrics.realism.frechet import as_float64

__all__ = ["FULL_SET_LIMIT", "polynomial_kernel", "mmd2_unbiased", "KIDResult", "kernel_inception_distance"]

FULL_SET_LIMIT = 12_000  # n + m up to which the whole-set estimate is used (kernel matrices of ≤ ~1.2 GB float64)


def polynomial_kernel(a: np.ndarray, b: np.ndarray, degree: int = 3, gamma: float | None = None,
                      coef: float = 1.0) -> np.ndarray:
    """``(γ a·bᵀ + c)^degree`` with ``γ = 1/d`` by default."""
    gamma = 1.0 / a.shape[1] if gamma is None else gamma
    return (a @ b.T * gamma + coef) ** degree


def _sums(k_xx, k_yy, k_xy):
    rx = k_xx.sum(1) - np.diag(k_xx)  # off-diagonal row sums
    ry = k_yy.sum(1) - np.diag(k_yy)
    return rx, ry, k_xy.sum(1), k_xy.sum(0)


def mmd2_unbiased(x, y, degree: int = 3, gamma: float | None = None, coef: float = 1.0) -> float:
    """The unbiased MMD² of the module docstring for ``x`` [n, d], ``y`` [m, d] (n ≠ m allowed)."""
    x, y = as_float64(x), as_float64(y)
    n, m = len(x), len(y)
    if n < 2 or m < 2:
        raise ValueError(f"the unbiased MMD² needs at least 2 samples per side, got {n} and {m}")
    rx, ry, sxy, _ = _sums(polynomial_kernel(x, x, degree, gamma, coef), polynomial_kernel(y, y, degree, gamma, coef),
                           polynomial_kernel(x, y, degree, gamma, coef))
    return float(rx.sum() / (n * (n - 1)) + ry.sum() / (m * (m - 1)) - 2.0 * sxy.sum() / (n * m))


@dataclass
class KIDResult:
    value: float  # the estimate (whole sets) or the mean over subsets
    std: float | None  # standard error (jackknife, whole sets) or the std over subsets
    method: str  # "whole-set jackknife" | "subsets"
    n_real: int
    n_fake: int
    subsets: int | None = None
    subset_size: int | None = None

    def as_dict(self) -> dict:
        return dict(vars(self))


def _jackknife(k_xx, k_yy, k_xy) -> tuple[float, float]:
    """(MMD²_u, two-sample jackknife standard error) from the three kernel matrices."""
    n, m = len(k_xx), len(k_yy)
    rx, ry, cx, cy = _sums(k_xx, k_yy, k_xy)  # cx[i] = Σ_j k(x_i, y_j), cy[j] = Σ_i k(x_i, y_j)
    sxx, syy, sxy = rx.sum(), ry.sum(), cx.sum()
    value = sxx / (n * (n - 1)) + syy / (m * (m - 1)) - 2.0 * sxy / (n * m)
    if n < 3 or m < 3:
        return float(value), float("nan")
    # delete x_i: the off-diagonal sum loses row and column i (2 r_i), the cross sum loses row i
    loo_x = (sxx - 2 * rx) / ((n - 1) * (n - 2)) + syy / (m * (m - 1)) - 2.0 * (sxy - cx) / ((n - 1) * m)
    loo_y = sxx / (n * (n - 1)) + (syy - 2 * ry) / ((m - 1) * (m - 2)) - 2.0 * (sxy - cy) / (n * (m - 1))
    var = (n - 1) / n * ((loo_x - loo_x.mean()) ** 2).sum() + (m - 1) / m * ((loo_y - loo_y.mean()) ** 2).sum()
    return float(value), float(np.sqrt(var))


def kernel_inception_distance(real, fake, subsets: int | None = None, subset_size: int = 1000, seed: int = 0,
                              degree: int = 3, gamma: float | None = None, coef: float = 1.0,
                              generator=None) -> KIDResult:
    """KID of features ``real`` [n, d] and ``fake`` [m, d] (module docstring).

    ``subsets=None``: whole sets with a jackknife error when ``n + m ≤ FULL_SET_LIMIT``, else 100 subsets.
    ``subsets=S``: S subsets of ``min(subset_size, n, m)`` images per side, drawn as torchmetrics draws them
    (``torch.randperm(n)[:s]`` for the real side, then for the generated side, per subset) from ``generator``
    (a ``torch.Generator``; default one seeded with ``seed``).
    """
    x, y = as_float64(real), as_float64(fake)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"real and fake must be [n, d] and [m, d] features, got {x.shape} and {y.shape}")
    n, m = len(x), len(y)
    if n < 2 or m < 2:
        raise ValueError(f"KID needs at least 2 real and 2 generated images, got {n} and {m}")
    if subsets is None and n + m <= FULL_SET_LIMIT:
        k = lambda a, b: polynomial_kernel(a, b, degree, gamma, coef)  # noqa: E731
        value, se = _jackknife(k(x, x), k(y, y), k(x, y))
        return KIDResult(value, se, "whole-set jackknife", n, m)
    import torch

    subsets = 100 if subsets is None else int(subsets)
    size = min(int(subset_size), n, m)
    g = generator if generator is not None else torch.Generator().manual_seed(int(seed))
    scores = []
    for _ in range(subsets):
        xi = torch.randperm(n, generator=g)[:size].numpy()
        yi = torch.randperm(m, generator=g)[:size].numpy()
        scores.append(mmd2_unbiased(x[xi], y[yi], degree, gamma, coef))
    scores = np.asarray(scores)
    return KIDResult(float(scores.mean()), float(scores.std()), "subsets", n, m, subsets, size)
