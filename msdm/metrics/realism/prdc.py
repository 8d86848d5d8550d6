"""Precision / recall (Kynkäänniemi et al. 2019) and density / coverage (Naeem et al. 2020) on k-NN manifolds.

FID folds two failure modes into one number: images that are realistic but cover few modes, and images that cover
the data but are unrealistic. These four split them, on the same features as FID (Inception pool, 2048-d).

Each real feature ``x_i`` gets a ball of radius ``NND_k(x_i)``, its distance to its k-th nearest *other* real feature
(the k+1-th smallest distance counting itself: the authors' code takes ``np.partition(d, k)`` of a distance row that
includes the zero self-distance). The union of the balls estimates the real manifold; the same for generated ``y_j``.

* **precision** (Kynkäänniemi et al. 2019, eq. 1–2): share of generated ``y_j`` inside the real manifold,
  ``1/M Σ_j 1[∃ i: ‖y_j − x_i‖ ≤ NND_k(x_i)]``; **recall**: share of real ``x_i`` inside the generated manifold,
  ``1/N Σ_i 1[∃ j: ‖x_i − y_j‖ ≤ NND_k(y_j)]``. Paper default k = 3.
* **density** (Naeem et al. 2020, eq. 3): ``1/(kM) Σ_j Σ_i 1[‖y_j − x_i‖ ≤ NND_k(x_i)]`` — how many real balls hold a
  generated point, not just whether one does (robust to real outliers; 1 on average for matching distributions, can
  exceed 1); **coverage** (eq. 4): ``1/N Σ_i 1[∃ j: ‖y_j − x_i‖ ≤ NND_k(x_i)]`` — share of real balls that hold any
  generated point (built on the real manifold only, so generated outliers cannot inflate it). Paper default k = 5.

Distances are Euclidean, in float64. Balls are closed (``≤``); Naeem et al.'s reference code (``clovaai/generative-
evaluation-prdc``) writes ``<``, which differs only for exact ties (a generated image that equals a real one is inside
either way, distance 0 ≤ a positive radius).

Per-sample indicators are returned as well: their means are the metrics, and :mod:`msdm.metrics.realism.intervals`
bootstraps them into intervals (conditional on the manifolds, which are estimated once).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from msdm.metrics.realism.frechet import as_float64

__all__ = ["pairwise_distances", "knn_radii", "ManifoldScores", "manifold_scores", "precision_recall",
           "density_coverage", "PR_K", "DC_K"]

PR_K = 3  # Kynkäänniemi et al. 2019, §3: k = 3
DC_K = 5  # Naeem et al. 2020, §4: k = 5


def _features(x, name: str) -> np.ndarray:
    f = as_float64(x)
    if f.ndim != 2:
        raise ValueError(f"{name} must be a 2-D [num_samples, feature_dim] array, got shape {f.shape}")
    return f


def pairwise_distances(a, b, block: int = 2048) -> np.ndarray:
    """Euclidean distances ``[len(a), len(b)]`` in float64, ``‖a‖² + ‖b‖² − 2 a·b`` clipped at 0, in row blocks."""
    a, b = as_float64(a), as_float64(b)
    bb = np.einsum("ij,ij->i", b, b)
    out = np.empty((len(a), len(b)), dtype=np.float64)
    for s in range(0, len(a), block):
        aa = a[s:s + block]
        d2 = np.einsum("ij,ij->i", aa, aa)[:, None] + bb[None, :] - 2.0 * (aa @ b.T)
        out[s:s + block] = np.sqrt(np.maximum(d2, 0.0))
    return out


def knn_radii(feats, k: int, distances: np.ndarray | None = None) -> np.ndarray:
    """``NND_k`` of every row: its distance to its k-th nearest other row (self excluded)."""
    f = _features(feats, "feats")
    if not 1 <= k < len(f):
        raise ValueError(f"k = {k} needs at least k + 1 = {k + 1} samples, got {len(f)}")
    d = pairwise_distances(f, f) if distances is None else distances
    return np.partition(d, k, axis=1)[:, k]  # index k of the sorted row = k-th neighbour after the self-distance 0


@dataclass
class ManifoldScores:
    """Precision, recall, density, coverage and the per-sample values they average (see the module docstring)."""

    precision: float
    recall: float
    density: float
    coverage: float
    k_pr: int
    k_dc: int
    n_real: int
    n_fake: int
    in_real_manifold: np.ndarray  # [M] bool: generated j inside some real ball (precision = mean)
    in_fake_manifold: np.ndarray  # [N] bool: real i inside some generated ball (recall = mean)
    real_balls_hit: np.ndarray  # [M] float: number of real k_dc-balls holding generated j / k_dc (density = mean)
    real_ball_covered: np.ndarray  # [N] bool: real k_dc-ball i holds some generated point (coverage = mean)

    def as_dict(self) -> dict:
        return {"precision": self.precision, "recall": self.recall, "density": self.density,
                "coverage": self.coverage, "k_pr": self.k_pr, "k_dc": self.k_dc, "n_real": self.n_real,
                "n_fake": self.n_fake}


def manifold_scores(real, fake, k_pr: int = PR_K, k_dc: int = DC_K) -> ManifoldScores:
    """All four metrics from one set of distance matrices (``real`` [N, d], ``fake`` [M, d])."""
    x, y = _features(real, "real"), _features(fake, "fake")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"feature dimensions differ: {x.shape[1]} vs {y.shape[1]}")
    d_xx, d_yy, d_xy = pairwise_distances(x, x), pairwise_distances(y, y), pairwise_distances(x, y)  # d_xy: [N, M]
    r_x_pr, r_y_pr = knn_radii(x, k_pr, d_xx), knn_radii(y, k_pr, d_yy)
    r_x_dc = r_x_pr if k_dc == k_pr else knn_radii(x, k_dc, d_xx)
    in_real = (d_xy <= r_x_pr[:, None]).any(axis=0)
    in_fake = (d_xy <= r_y_pr[None, :]).any(axis=1)
    inside_dc = d_xy <= r_x_dc[:, None]  # [N, M]
    hits = inside_dc.sum(axis=0) / k_dc
    covered = inside_dc.any(axis=1)
    return ManifoldScores(
        precision=float(in_real.mean()), recall=float(in_fake.mean()), density=float(hits.mean()),
        coverage=float(covered.mean()), k_pr=k_pr, k_dc=k_dc, n_real=len(x), n_fake=len(y),
        in_real_manifold=in_real, in_fake_manifold=in_fake, real_balls_hit=hits, real_ball_covered=covered,
    )


def precision_recall(real, fake, k: int = PR_K) -> tuple[float, float]:
    """(precision, recall) of Kynkäänniemi et al. 2019 with k-NN balls (k = 3)."""
    s = manifold_scores(real, fake, k_pr=k, k_dc=k)
    return s.precision, s.recall


def density_coverage(real, fake, k: int = DC_K) -> tuple[float, float]:
    """(density, coverage) of Naeem et al. 2020 with k-NN balls of the real features (k = 5)."""
    s = manifold_scores(real, fake, k_pr=k, k_dc=k)
    return s.density, s.coverage
