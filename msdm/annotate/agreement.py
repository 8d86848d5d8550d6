"""Krippendorff's α: agreement between raters for any number of raters, missing ratings and measurement levels.

Implemented from K. Krippendorff, *Computing Krippendorff's Alpha-Reliability* (2011), via the coincidence matrix:

* ``o[c, k]`` = Σ over units u with m_u ≥ 2 ratings of (number of ordered pairs of values (c, k) from different
  raters in u) / (m_u − 1); ``n_c = Σ_k o[c, k]``, ``n = Σ_c n_c``;
* α = 1 − (n − 1) · Σ o[c, k] δ²(c, k) / Σ n_c n_k δ²(c, k).

δ² by level: nominal 1[c ≠ k]; interval (c − k)²; ratio ((c − k)/(c + k))²; ordinal
(Σ_{g from c to k} n_g − (n_c + n_k)/2)² over the ordered values. The paper's worked example (4 coders, 12 units,
missing data) gives 0.743 / 0.815 / 0.849 / 0.797 (nominal / ordinal / interval / ratio); the tests check these.

Rank data (a rank per item) is ordinal; 0–10 scores are interval (and ordinal, which makes no claim that the
steps are equal). α = 1 is perfect agreement, 0 is chance level; Krippendorff suggests α ≥ 0.8 for firm
conclusions and ≥ 0.667 for tentative ones.
"""

from __future__ import annotations

import numpy as np

LEVELS = ("nominal", "ordinal", "interval", "ratio")


def _delta2(values: np.ndarray, counts: np.ndarray, level: str) -> np.ndarray:
    c, k = values[:, None], values[None, :]
    if level == "nominal":
        return (c != k).astype(float)
    if level == "interval":
        return (c - k) ** 2
    if level == "ratio":
        s = c + k
        with np.errstate(invalid="ignore", divide="ignore"):
            d = np.where(s == 0, 0.0, (c - k) / np.where(s == 0, 1, s))
        return d**2
    if level == "ordinal":
        cum = np.cumsum(counts)  # values are sorted: Σ_{g ≤ i} n_g
        i, j = np.meshgrid(np.arange(len(values)), np.arange(len(values)), indexing="ij")
        lo, hi = np.minimum(i, j), np.maximum(i, j)
        between = cum[hi] - cum[lo] + counts[lo]  # Σ_{g = lo..hi} n_g
        return (between - (counts[i] + counts[j]) / 2) ** 2
    raise ValueError(f"level must be one of {LEVELS}, got {level!r}")


def krippendorff_alpha(data, level: str = "interval") -> float:
    """α of a reliability matrix ``data`` [raters, units] (``NaN`` = not rated). NaN when undefined (fewer than
    two pairable ratings, or no variation at all)."""
    x = np.asarray(data, dtype=float)
    if x.ndim != 2:
        raise ValueError(f"data must be [raters, units], got shape {x.shape}")
    values = np.unique(x[~np.isnan(x)])
    if len(values) == 0:
        return float("nan")
    index = {v: i for i, v in enumerate(values)}
    o = np.zeros((len(values), len(values)))
    for u in range(x.shape[1]):
        col = x[:, u][~np.isnan(x[:, u])]
        m = len(col)
        if m < 2:
            continue
        cnt = np.zeros(len(values))
        for v in col:
            cnt[index[v]] += 1
        # ordered pairs from different raters: cnt_c·cnt_k for c ≠ k, cnt_c·(cnt_c − 1) on the diagonal
        o += (np.outer(cnt, cnt) - np.diag(cnt)) / (m - 1)
    n_c = o.sum(axis=1)
    n = n_c.sum()
    if n <= 1:
        return float("nan")
    d2 = _delta2(values, n_c, level)
    d_e = (np.outer(n_c, n_c) * d2).sum()
    if d_e == 0:
        return float("nan")
    return float(1.0 - (n - 1) * (o * d2).sum() / d_e)


def reliability_matrix(ratings: list[tuple[str, object, float]]) -> tuple[np.ndarray, list, list]:
    """``[(rater, unit, value), ...]`` → (matrix [raters, units] with NaN for missing, raters, units)."""
    raters = sorted({r for r, _, _ in ratings})
    units = sorted({u for _, u, _ in ratings}, key=repr)
    ri, ui = {r: i for i, r in enumerate(raters)}, {u: i for i, u in enumerate(units)}
    x = np.full((len(raters), len(units)), np.nan)
    for r, u, v in ratings:
        x[ri[r], ui[u]] = float(v)
    return x, raters, units
