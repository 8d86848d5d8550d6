"""Does a generator copy its training frames? Nearest training frame of every generated image, and a copy verdict
whose threshold is calibrated on real frames.

Two views of "the same image", because copies come in two kinds (Somepalli et al. 2023, "Diffusion Art or Digital
Forgery?"; Carlini et al. 2023, "Extracting Training Data from Diffusion Models"):

* **features** — Inception pool features (the FID extractor), cosine distance. Catches copies that are recoloured,
  re-encoded, slightly cropped or flipped (the pool features barely move), i.e. a model that reproduces a frame's
  content rather than its pixels. With it: the ratio of the nearest to the second-nearest distance (Carlini et al.'s
  relative distance: a copy is much closer to one frame than to any other).
* **pixels** — SSIM (Wang et al. 2004: Gaussian window 11, σ 1.5, K1 0.01, K2 0.03) on luma at ``size`` px
  (64 by default: small enough to ignore JPEG noise, large enough to tell two polyps apart), against the training
  frames, their horizontal, vertical and double flips (training often flips) and, for the best matches, crops of
  90–95 % of their side (training often crops; a 10 % crop alone drops the plain SSIM of a copy to that of an
  unrelated frame). SSIM against all pairs would cost ~1 s per generated image for 700 training frames; instead each
  image is compared with a shortlist: the ``shortlist`` nearest frames by features and the ``shortlist`` nearest
  flips by normalised cross-correlation of 32-px luma (one matrix product). bench/memorization_speed.py measures
  how often the shortlist finds the brute-force best SSIM.

**Calibration.** How close is "too close" depends on the data: colonoscopy frames of one video are near-duplicates
of each other. So the thresholds come from real frames the generator never saw: each calibration frame's nearest
training frame, in both views. A generated image is a copy when its feature distance is below the ``α/2`` quantile
of the calibration distances, or its SSIM above the ``1 − α/2`` quantile of theirs — so a real, unseen frame is
flagged with probability ≤ α (α = 2 % by default: the union of two views at α/2 each). Without held-out frames, the
calibration is leave-one-out on the training frames (each frame against the others), which is stricter where the
training set holds near-duplicates.

The **copy fraction** comes with a 95 % interval that is the union (the widest of each bound) of two intervals:

* a percentile **bootstrap** that resamples both the generated images and the calibration frames — the threshold's
  own uncertainty is in it;
* the exact binomial (**Clopper–Pearson** 1934) interval of k flagged out of n, the threshold held fixed — the
  sampling of the generated images, exact at every n and count.

Why both, at every count: a percentile bootstrap of a proportion collapses to [0, 0] at k = 0 (and [1, 1] at
k = n) — no resample can hold a copy that the sample lacks — and under-covers near the edges at small n (k = 1 of
20 gives ≈ [0, 0.15], narrower than Clopper–Pearson's [0.001, 0.25]). Switching to the binomial interval only at
k ∈ {0, n} would make the upper bound of 0/20 (0.168) exceed that of 1/20's bootstrap. Clopper–Pearson's upper
bound at k = 0 is 1 − (α/2)^(1/n) ≈ 3.7/n at 95 % (the one-sided "rule of three", 3/n, is its 90 % two-sided form).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from msdm.metrics.realism.frechet import as_float64

__all__ = ["DEFAULT_ALPHA", "FLIPS", "luma_thumbnails", "ssim", "feature_neighbours", "pixel_neighbours",
           "Calibration", "calibrate", "MemorizationResult", "memorization_report", "clopper_pearson"]

DEFAULT_ALPHA = 0.02
FLIPS = ("none", "h", "v", "hv")
ALIGN_SCALES = (1.0, 0.95, 0.9)  # crop sides the pixel view tries (disguised copies keep >= 90 % of each side)
_SHORTLIST_SIZE = 32  # side of the luma thumbnails that pick the SSIM shortlist


# ----------------------------------------------------------------------------------------------------------------
# Pixels
# ----------------------------------------------------------------------------------------------------------------


def luma_thumbnails(images, size: int = 64) -> torch.Tensor:
    """Images (paths, PIL, arrays, tensors: anything ``to_uint8_images`` takes) → luma ``[N, size, size]`` in [0, 1].

    PIL's antialiased bilinear resize of the RGB image, then ITU-R BT.601 luma (PIL's ``convert("L")`` weights).
    """
    from PIL import Image

    from msdm.metrics.realism.features import to_uint8_images

    out = []
    for a in to_uint8_images(images):
        im = Image.fromarray(a).resize((size, size), Image.BILINEAR)
        out.append(np.asarray(im.convert("L"), dtype=np.float32) / 255.0)
    return torch.from_numpy(np.stack(out)) if out else torch.zeros(0, size, size)


def _flipped(x: torch.Tensor) -> torch.Tensor:
    """``[N, S, S]`` → ``[N, 4, S, S]``: the image, its horizontal, vertical and double flip (order of FLIPS)."""
    return torch.stack([x, x.flip(-1), x.flip(-2), x.flip(-1, -2)], 1)


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    g = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(g**2) / (2 * sigma**2))
    return g / g.sum()


def _blur(x: torch.Tensor, win: torch.Tensor) -> torch.Tensor:
    # separable Gaussian filter over a reflection-padded image, output the image's size (torchmetrics' SSIM borders;
    # Wang et al.'s ssim_index.m drops the borders instead)
    k = len(win)
    x = F.pad(x.unsqueeze(1), (k // 2, k // 2, k // 2, k // 2), mode="reflect")
    x = F.conv2d(x, win.view(1, 1, 1, k))
    return F.conv2d(x, win.view(1, 1, k, 1)).squeeze(1)


def ssim(a: torch.Tensor, b: torch.Tensor, window: int = 11, sigma: float = 1.5, k1: float = 0.01,
         k2: float = 0.03) -> torch.Tensor:
    """Mean SSIM of image pairs ``a[i]``, ``b[i]`` (``[P, H, W]`` in [0, 1], data range 1) → ``[P]``; equal to
    torchmetrics' ``structural_similarity_index_measure`` (Gaussian kernel) per pair."""
    win = _gaussian_window(window, sigma).to(a)
    c1, c2 = k1**2, k2**2
    mu_a, mu_b = _blur(a, win), _blur(b, win)
    var_a = (_blur(a * a, win) - mu_a**2).clamp_min(0)
    var_b = (_blur(b * b, win) - mu_b**2).clamp_min(0)
    cov = _blur(a * b, win) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return s.flatten(1).mean(1)


def _standardise(x: torch.Tensor) -> torch.Tensor:
    x = x.flatten(1).double()
    x = x - x.mean(1, keepdim=True)
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)


# ----------------------------------------------------------------------------------------------------------------
# Nearest neighbours
# ----------------------------------------------------------------------------------------------------------------


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def feature_neighbours(query, train, exclude_self: bool = False, shortlist: int = 0):
    """Cosine distance of every query feature to its nearest and second-nearest training feature.

    Returns ``(index [n], d1 [n], d2 [n], shortlist [n, k])``; ``exclude_self``: query i is training frame i
    (leave-one-out calibration) and may not be its own neighbour.
    """
    q, t = _unit(as_float64(query)), _unit(as_float64(train))
    if len(t) < 2 + exclude_self:
        raise ValueError(f"nearest/second-nearest distances need at least {2 + exclude_self} training frames")
    d = np.clip(1.0 - q @ t.T, 0.0, 2.0)
    if exclude_self:
        np.fill_diagonal(d, np.inf)
    part = np.argpartition(d, 1, axis=1)[:, :2]
    two = np.take_along_axis(d, part, 1)
    first = two.argmin(1)
    idx = part[np.arange(len(q)), first]
    d1, d2 = two.min(1), two.max(1)
    k = min(shortlist, len(t) - exclude_self)
    near = np.argsort(d, axis=1)[:, :k] if k else np.zeros((len(q), 0), dtype=np.int64)
    return idx, d1, d2, near


def _zoom_grid(size: int, scales: Sequence[float] = ALIGN_SCALES, steps: int = 3) -> torch.Tensor:
    """Sampling grids ``[V, S, S, 2]`` of the crops a small-crop copy could come from: the whole frame, and at each
    scale < 1 a ``steps`` × ``steps`` grid of positions (affine_grid: a crop of side ``scale`` centred at (ox, oy))."""
    thetas = []
    for sc in scales:
        offs = [0.0] if sc == 1.0 else np.linspace(-(1 - sc), 1 - sc, steps)
        thetas += [[[sc, 0.0, ox], [0.0, sc, oy]] for oy in offs for ox in offs]
    theta = torch.tensor(thetas, dtype=torch.float32)
    return F.affine_grid(theta, [len(thetas), 1, size, size], align_corners=False)


def pixel_neighbours(query: torch.Tensor, train: torch.Tensor, feature_shortlist: np.ndarray | None = None,
                     shortlist: int = 8, exclude_self: bool = False, align: int = 2, batch_size: int = 256):
    """Best SSIM of every query thumbnail against the training thumbnails, their flips and small crops of them.

    ``query`` ``[n, S, S]``, ``train`` ``[N, S, S]`` luma. Candidates per query: the ``shortlist`` training flips
    with the highest normalised cross-correlation at 32 px, plus every flip of the ``feature_shortlist`` frames;
    SSIM ranks them, and the ``align`` best are then also compared as crops (:data:`ALIGN_SCALES` of the side, at
    3 × 3 positions, resampled to S): a copy cropped by up to 10 % keeps an SSIM near the uncropped one's, where
    plain SSIM drops to that of an unrelated frame (measured on Kvasir: docs/metrics.md). Returns
    ``(train index [n], flip index [n] into FLIPS, ssim [n], crop scale [n])``.
    """
    n, size = len(query), query.shape[-1]
    tflips = _flipped(train)  # [N, 4, S, S]
    small = lambda x: F.interpolate(x.unsqueeze(1), size=(_SHORTLIST_SIZE,) * 2, mode="area").squeeze(1)  # noqa: E731
    q_small = _standardise(small(query))
    t_small = _standardise(small(tflips.reshape(-1, size, size)))  # [4N, 1024], row = 4·frame + flip
    grid = _zoom_grid(size)  # [V, S, S, 2]
    scales = np.repeat(ALIGN_SCALES, [1] + [9] * (len(ALIGN_SCALES) - 1))
    best_i, best_f = np.zeros(n, np.int64), np.zeros(n, np.int64)
    best_s, best_z = np.full(n, -np.inf), np.ones(n)
    for s in range(0, n, batch_size):
        qb = slice(s, min(n, s + batch_size))
        ncc = q_small[qb] @ t_small.T  # [b, 4N]
        if exclude_self:
            rows = torch.arange(qb.start, qb.stop)
            for f in range(4):
                ncc[torch.arange(len(rows)), rows * 4 + f] = -math.inf
        top = ncc.topk(min(shortlist, ncc.shape[1]), dim=1).indices.numpy()  # [b, k] flat (frame, flip) indices
        for r, qi in enumerate(range(qb.start, qb.stop)):
            cand = set(top[r].tolist())
            if feature_shortlist is not None:
                cand |= {4 * int(j) + f for j in feature_shortlist[qi] for f in range(4)}
            cand = np.array(sorted(c for c in cand if not (exclude_self and c // 4 == qi)))
            if cand.size == 0:
                continue
            sc = ssim(query[qi].expand(len(cand), -1, -1), tflips[cand // 4, cand % 4]).numpy()
            keep = cand[np.argsort(-sc, kind="stable")[:max(1, align)]]
            if align:
                src = tflips[keep // 4, keep % 4]  # [T, S, S]
                v = len(grid)
                crops = F.grid_sample(src.repeat_interleave(v, 0).unsqueeze(1), grid.repeat(len(keep), 1, 1, 1),
                                      mode="bilinear", padding_mode="border", align_corners=False).squeeze(1)
                sa = ssim(query[qi].expand(len(crops), -1, -1), crops).numpy()  # [T·V]; scale 1 = the plain SSIM
                k = int(sa.argmax())
                c, z, val = keep[k // v], scales[k % v], sa[k]
            else:
                c, z, val = keep[0], 1.0, sc.max()
            best_i[qi], best_f[qi], best_s[qi], best_z[qi] = c // 4, c % 4, val, z
    return best_i, best_f, best_s, best_z


# ----------------------------------------------------------------------------------------------------------------
# Calibration and the report
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class Calibration:
    """The real frames' nearest-training distances and the thresholds they set (module docstring)."""

    feature_distance: np.ndarray  # [n_cal] cosine distance of each calibration frame to its nearest training frame
    ssim: np.ndarray  # [n_cal] best SSIM of each calibration frame against the training frames (and flips)
    alpha: float
    source: str  # "held-out" | "leave-one-out"

    @staticmethod
    def thresholds_of(dist: np.ndarray, sims: np.ndarray, alpha: float) -> tuple[float, float]:
        # "lower"/"higher": thresholds are real observed values, so exactly ⌈(α/2)·n⌉-ish calibration frames are
        # at or beyond them, and the flagged rule (< / >) is strict
        return (float(np.quantile(dist, alpha / 2, method="lower")),
                float(np.quantile(sims, 1 - alpha / 2, method="higher")))

    @property
    def thresholds(self) -> tuple[float, float]:
        return self.thresholds_of(self.feature_distance, self.ssim, self.alpha)

    def flagged(self, dist: np.ndarray, sims: np.ndarray) -> np.ndarray:
        t_d, t_s = self.thresholds
        return (dist < t_d) | (sims > t_s)


def calibrate(train_feats, train_thumbs: torch.Tensor, cal_feats=None, cal_thumbs: torch.Tensor | None = None,
              alpha: float = DEFAULT_ALPHA, shortlist: int = 8) -> Calibration:
    """Calibration distances of held-out frames (``cal_*``) or, without them, of the training frames leave-one-out."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    loo = cal_feats is None
    qf, qt = (train_feats, train_thumbs) if loo else (cal_feats, cal_thumbs)
    _, d1, _, near = feature_neighbours(qf, train_feats, exclude_self=loo, shortlist=shortlist)
    _, _, s, _ = pixel_neighbours(qt, train_thumbs, near, shortlist, exclude_self=loo)
    return Calibration(d1, s, float(alpha), "leave-one-out" if loo else "held-out")


@dataclass
class MemorizationResult:
    copy_fraction: float
    interval: dict
    n_generated: int
    n_train: int
    calibration: Calibration
    rows: list[dict] = field(default_factory=list)  # one per generated image (write_csv)

    def summary(self) -> dict:
        t_d, t_s = self.calibration.thresholds
        cal_rate = float(self.calibration.flagged(self.calibration.feature_distance, self.calibration.ssim).mean())
        return {
            "copy_fraction": self.copy_fraction, "interval": self.interval, "n_generated": self.n_generated,
            "n_train": self.n_train, "n_calibration": len(self.calibration.ssim),
            "calibration": self.calibration.source, "alpha": self.calibration.alpha,
            "threshold_feature_distance": t_d, "threshold_ssim": t_s,
            "calibration_flagged": cal_rate,
            "flagged_by_features": int(sum(r["copy_by_features"] for r in self.rows)),
            "flagged_by_pixels": int(sum(r["copy_by_pixels"] for r in self.rows)),
        }


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Exact two-sided binomial interval of ``k`` successes in ``n`` trials (Clopper & Pearson 1934): the beta
    quantiles ``B(a/2; k, n − k + 1)`` and ``B(1 − a/2; k + 1, n − k)``, a = 1 − level; 0 and 1 at the edges, where
    the other bound has the closed form ``1 − (a/2)^(1/n)`` (k = 0) and ``(a/2)^(1/n)`` (k = n)."""
    from scipy.stats import beta

    if n < 1 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n and n >= 1, got k={k}, n={n}")
    a = 1.0 - level
    low = 0.0 if k == 0 else float(beta.ppf(a / 2, k, n - k + 1))
    high = 1.0 if k == n else float(beta.ppf(1 - a / 2, k + 1, n - k))
    return low, high


def _bootstrap_copy_fraction(gen_d, gen_s, cal: Calibration, num_samples: int, level: float, seed: int) -> dict:
    """The copy fraction's interval: the union of the bootstrap and Clopper–Pearson intervals (module docstring)."""
    rng = np.random.default_rng(seed)
    n, c = len(gen_d), len(cal.ssim)
    fr = np.empty(num_samples)
    for b in range(num_samples):
        ci = rng.integers(0, c, c)
        t_d, t_s = Calibration.thresholds_of(cal.feature_distance[ci], cal.ssim[ci], cal.alpha)
        gi = rng.integers(0, n, n)
        fr[b] = np.mean((gen_d[gi] < t_d) | (gen_s[gi] > t_s))
    lo, hi = np.quantile(fr, [(1 - level) / 2, (1 + level) / 2])
    k = int(cal.flagged(gen_d, gen_s).sum())
    cp_lo, cp_hi = clopper_pearson(k, n, level)
    return {"low": float(min(lo, cp_lo)), "high": float(max(hi, cp_hi)), "level": level,
            "bootstrap": [float(lo), float(hi)], "clopper_pearson": [cp_lo, cp_hi],
            "method": f"union of a percentile bootstrap over generated and calibration frames ({num_samples}) and "
                      f"the exact binomial (Clopper-Pearson) interval of {k}/{n}"}


def memorization_report(gen_feats, gen_thumbs: torch.Tensor, train_feats, train_thumbs: torch.Tensor,
                        cal_feats=None, cal_thumbs: torch.Tensor | None = None, alpha: float = DEFAULT_ALPHA,
                        gen_ids: Sequence[str] | None = None, train_ids: Sequence[str] | None = None,
                        shortlist: int = 8, num_bootstrap: int = 1000, level: float = 0.95,
                        seed: int = 0, calibration: Calibration | None = None) -> MemorizationResult:
    """The copy verdict of every generated image (features ``[n, d]`` + luma thumbnails ``[n, S, S]``) against the
    training frames, calibrated on ``cal_*`` (held-out real frames) or leave-one-out (module docstring)."""
    n, nt = len(gen_thumbs), len(train_thumbs)
    if len(as_float64(gen_feats)) != n or len(as_float64(train_feats)) != nt:
        raise ValueError("features and thumbnails must describe the same images (counts differ)")
    cal = calibration or calibrate(train_feats, train_thumbs, cal_feats, cal_thumbs, alpha, shortlist)
    idx, d1, d2, near = feature_neighbours(gen_feats, train_feats, shortlist=shortlist)
    p_idx, p_flip, s, zoom = pixel_neighbours(gen_thumbs, train_thumbs, near, shortlist)
    t_d, t_s = cal.thresholds
    by_f, by_p = d1 < t_d, s > t_s
    copies = by_f | by_p
    gen_ids = list(gen_ids) if gen_ids is not None else [str(i) for i in range(n)]
    train_ids = list(train_ids) if train_ids is not None else [str(i) for i in range(nt)]
    rows = [{
        "generated": gen_ids[i], "nearest_train_features": train_ids[idx[i]],
        "feature_distance": float(d1[i]), "second_feature_distance": float(d2[i]),
        "nn_ratio": float(d1[i] / d2[i]) if d2[i] > 0 else 1.0,
        "nearest_train_pixels": train_ids[p_idx[i]], "flip": FLIPS[p_flip[i]], "crop": float(zoom[i]),
        "ssim": float(s[i]),
        "copy_by_features": bool(by_f[i]), "copy_by_pixels": bool(by_p[i]), "copy": bool(copies[i]),
    } for i in range(n)]
    interval = _bootstrap_copy_fraction(d1, s, cal, num_bootstrap, level, seed)
    return MemorizationResult(float(copies.mean()), interval, n, nt, cal, rows)
