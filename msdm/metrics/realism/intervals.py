"""Every figure with its n and its interval: bootstrap intervals, and the sample sizes a figure needs to be stable.

Intervals (95 % unless ``level`` says otherwise):

* a **mean of per-image values** (precision, recall, density, coverage: indicators or counts per image, given the
  k-NN manifolds): percentile bootstrap over the images (Efron & Tibshirani 1993, ch. 13);
* **FID / FBD**: bootstrap over both image sets (generated and real resampled independently), computed exactly from
  Gram matrices (:func:`frechet_bootstrap`), reported as ``FID ± 1.96 · SE_boot``. Not the percentile interval: a
  resample repeats images, which lowers its effective n and raises its FID (FID is biased upwards at finite n,
  Chong & Forsyth 2020), so the bootstrap distribution sits above the estimate and its percentiles would not
  even contain it. The interval says how much the FID moves between draws of the same size; FIDs at different n
  still differ by their bias and are not comparable;
* **KID**: its own jackknife standard error (:mod:`msdm.metrics.realism.kid`), ``KID ± 1.96 · SE``;
* **copy fraction**: bootstrap over generated images *and* over the calibration frames that set the threshold,
  united with the exact binomial (Clopper–Pearson) interval of the count, so 0 of n copies gives [0, ≈ 3.7/n],
  not [0, 0] (:mod:`msdm.metrics.realism.memorization`);
* **over runs** (``msdm report``): mean ± sample std (ddof 1) of the runs.

:data:`STABILITY_RULES` states, per figure, the n below which ``msdm evaluate`` / ``msdm report`` print a warning,
and where the rule comes from.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from msdm.metrics.realism.frechet import as_float64

__all__ = ["Interval", "Z95", "percentile_bootstrap_mean", "bootstrap_statistic", "frechet_bootstrap",
           "normal_interval", "STABILITY_RULES", "stability_warnings", "format_figure"]

Z95 = 1.959963984540054  # Φ⁻¹(0.975)


@dataclass
class Interval:
    low: float
    high: float
    level: float = 0.95
    method: str = ""

    def as_dict(self) -> dict:
        return {"low": self.low, "high": self.high, "level": self.level, "method": self.method}


def _z(level: float) -> float:
    from statistics import NormalDist

    return Z95 if level == 0.95 else NormalDist().inv_cdf(0.5 + level / 2)


def normal_interval(value: float, se: float, level: float = 0.95, method: str = "± z·SE") -> Interval:
    z = _z(level)
    return Interval(float(value - z * se), float(value + z * se), level, method)


def percentile_bootstrap_mean(values, num_samples: int = 2000, level: float = 0.95, seed: int = 0) -> Interval:
    """Percentile bootstrap interval of the mean of per-item values (resampling items with replacement)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        return Interval(float("nan"), float("nan"), level, "percentile bootstrap")
    rng = np.random.default_rng(seed)
    means = np.empty(num_samples)
    for s in range(0, num_samples, 256):  # [b, n] resampled indices per block of replicates
        b = min(256, num_samples - s)
        means[s:s + b] = v[rng.integers(0, v.size, (b, v.size))].mean(1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return Interval(float(lo), float(hi), level, f"percentile bootstrap ({num_samples})")


def bootstrap_statistic(stat: Callable[..., float], samples: Sequence[np.ndarray], num_samples: int = 1000,
                        seed: int = 0) -> np.ndarray:
    """``stat(*resampled)`` for ``num_samples`` resamples, each array resampled (rows, with replacement) on its own."""
    rng = np.random.default_rng(seed)
    out = np.empty(num_samples)
    for b in range(num_samples):
        out[b] = stat(*[s[rng.integers(0, len(s), len(s))] for s in samples])
    return out


def _frechet_weighted(k11, k22, k12, w1, w2) -> float:
    """FD of two weighted samples (integer weights = bootstrap counts) from their Gram matrices only.

    With weights w (Σw = n) the mean is Xᵀw/n and the covariance Σ w_i (x_i − μ)(x_i − μ)ᵀ/(n − 1) — the sample
    covariance of the resample with its repeats written out. Everything FD needs is an inner product:
    ‖μ1 − μ2‖² and tr Σ from K11, K22, K12, and tr sqrtm(Σ1Σ2) is the nuclear norm of
    diag(√w1)(X1 − 1μ1ᵀ)(X2 − 1μ2ᵀ)ᵀdiag(√w2)/√((n−1)(m−1)) (the sample path of msdm.metrics.realism.frechet), whose centred
    cross product is K12 − (K12 w2/m)1ᵀ − 1(w1ᵀK12/n) + (w1ᵀK12w2/(nm)) 11ᵀ. No d-dimensional work per resample.
    """
    n, m = w1.sum(), w2.sum()
    a, b = w1 > 0, w2 > 0
    w1, w2 = w1[a], w2[b]
    k11, k22, k12 = k11[np.ix_(a, a)], k22[np.ix_(b, b)], k12[np.ix_(a, b)]
    k11w, k22w, k12w2, k12tw1 = k11 @ w1, k22 @ w2, k12 @ w2, k12.T @ w1
    mu11, mu22, mu12 = w1 @ k11w / n**2, w2 @ k22w / m**2, w1 @ k12w2 / (n * m)
    tr1 = (w1 @ np.diag(k11) - n * mu11) / (n - 1)
    tr2 = (w2 @ np.diag(k22) - m * mu22) / (m - 1)
    centred = k12 - k12w2[:, None] / m - k12tw1[None, :] / n + mu12
    cross = np.sqrt(w1)[:, None] * centred * np.sqrt(w2)[None, :]
    tr_covmean = np.linalg.svd(cross, compute_uv=False).sum() / math.sqrt((n - 1) * (m - 1))
    return float(mu11 + mu22 - 2 * mu12 + tr1 + tr2 - 2 * tr_covmean)


def frechet_bootstrap(feats1, feats2, num_samples: int = 200, seed: int = 0) -> np.ndarray:
    """FD of ``num_samples`` bootstrap resamples of both feature sets (exact, via Gram matrices: see
    :func:`_frechet_weighted`). The first call costs the three Gram matrices; each resample an SVD of about
    0.63 n × 0.63 m (the distinct images of a resample)."""
    x1, x2 = as_float64(feats1), as_float64(feats2)
    n, m = len(x1), len(x2)
    k11, k22, k12 = x1 @ x1.T, x2 @ x2.T, x1 @ x2.T
    rng = np.random.default_rng(seed)
    out = np.empty(num_samples)
    for b in range(num_samples):
        w1 = np.bincount(rng.integers(0, n, n), minlength=n).astype(np.float64)
        w2 = np.bincount(rng.integers(0, m, m), minlength=m).astype(np.float64)
        out[b] = _frechet_weighted(k11, k22, k12, w1, w2)
    return out


# ----------------------------------------------------------------------------------------------------------------
# How many images a figure needs
# ----------------------------------------------------------------------------------------------------------------

# figure -> (minimum n (of the smaller side unless said otherwise), the rule, its source)
STABILITY_RULES: dict[str, tuple[int, str]] = {
    "FID": (2048, "FID needs more images than Inception's 2 048 feature dimensions for a full-rank covariance; below "
                  "that (and well above) it is biased upwards by a term ∝ 1/n, so FIDs at different n are not "
                  "comparable (Chong & Forsyth 2020, 'Effectively Unbiased FID'; Heusel et al. 2017 use 50 000)"),
    "FBD": (768, "FBD needs more images than BiomedCLIP's 768 feature dimensions for a full-rank covariance, and is "
                 "biased ∝ 1/n like FID (Chong & Forsyth 2020)"),
    "KID": (100, "KID is unbiased at any n (Bińkowski et al. 2018) but its standard error at small n can exceed its "
                 "value: below 100 images per side, or when the interval holds 0, read it as 'no detectable "
                 "difference' rather than as a number"),
    "precision": (1000, "k-NN manifolds from few images are coarse and move with n (Kynkäänniemi et al. 2019 and "
                        "Naeem et al. 2020 evaluate with 10 000–50 000 images); compare P/R/D/C only at equal n"),
    "copy_fraction": (100, "a fraction of n images has a binomial standard error up to 0.5/√n (0.05 at n = 100); the "
                           "threshold's own error shrinks with the calibration frames (< 10/α of them leave fewer "
                           "than 10 beyond the α-quantile)"),
}
for _k in ("recall", "density", "coverage"):
    STABILITY_RULES[_k] = STABILITY_RULES["precision"]


def stability_warnings(figures: Mapping[str, Mapping]) -> list[str]:
    """One line per figure whose n is below its rule. ``figures``: ``{name: {"n_real", "n_generated"[, "interval",
    "value", "n_calibration", "alpha"]}}``."""
    out, seen = [], set()
    for name, f in figures.items():
        rule = STABILITY_RULES.get(name)
        if rule is None:
            continue
        need, why = rule
        n = min(v for v in (f.get("n_real"), f.get("n_generated")) if v is not None)
        reasons = []
        if n < need:
            reasons.append(f"n = {n} < {need}")
        iv = f.get("interval")
        if name == "KID" and iv and iv.get("low", 0) <= 0 <= iv.get("high", 0):
            reasons.append("its interval holds 0")
        if name == "copy_fraction" and f.get("n_calibration") and f.get("alpha"):
            if f["n_calibration"] < 10 / f["alpha"]:
                reasons.append(f"{f['n_calibration']} calibration frames < 10/α = {10 / f['alpha']:.0f}")
        if reasons:
            key = "P/R/D/C" if name in ("precision", "recall", "density", "coverage") else name
            if key in seen:
                continue
            seen.add(key)
            out.append(f"warning: {key}: {', '.join(reasons)}: {why}.")
    return out


def format_figure(value: float, interval: Mapping | None = None, decimals: int = 2) -> str:
    """``12.34 [10.10, 14.58]`` (or just the value)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    s = f"{value:.{decimals}f}"
    if interval:
        s += f" [{interval['low']:.{decimals}f}, {interval['high']:.{decimals}f}]"
    return s
