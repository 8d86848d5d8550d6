"""torchmetrics ``Metric`` classes for the figures that need every feature, not moments: KID and precision /
recall / density / coverage.

Like :class:`~msdm.metrics.realism.metric.FrechetDistance` they take features, not images (the extractor stays on the
callback or in the command). The generated side is kept as ``cat`` states, gathered across ranks, with each
feature's global image index; :meth:`FeatureSetMetric.generated` sorts by that index, so the set — and a KID's
seeded subsets — is the same whatever the number of ranks and however the images were sharded. A rank that never
called ``update`` syncs typed empty states (as ``PromptMetrics``: torchmetrics' own placeholder is a float 1-D
tensor that would not match the other ranks' integer indices). The real side is fixed features
(:meth:`~FeatureSetMetric.set_reference_features`, the same on every rank, not synced) or ``update(x, real=True)``.

``compute()`` all-gathers: call it on every rank (torchmetrics#2684) and log with ``sync_dist=False``.
"""

from __future__ import annotations

import numpy as np
import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from msdm.metrics.realism.frechet import as_float64
from msdm.metrics.realism.intervals import normal_interval, percentile_bootstrap_mean
from msdm.metrics.realism.kid import kernel_inception_distance
from msdm.metrics.realism.prdc import DC_K, PR_K, manifold_scores

__all__ = ["FeatureSetMetric", "KernelDistance", "ManifoldMetrics"]


class FeatureSetMetric(Metric):
    """Generated (and optionally real) features as gathered sets, ordered by global image index."""

    is_differentiable = False
    full_state_update = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        for side in ("gen", "real"):
            # flattened features + their width (max-reduced), so an empty rank can send a same-rank empty tensor
            self.add_state(f"{side}_features", [], dist_reduce_fx="cat")
            self.add_state(f"{side}_index", [], dist_reduce_fx="cat")
        self.add_state("feature_dim", torch.tensor(0, dtype=torch.long), dist_reduce_fx="max")
        self._reference: np.ndarray | None = None
        self._arrivals = {"gen": 0, "real": 0}

    def set_reference_features(self, features) -> None:
        """Fixed real features ``[n, d]`` (the same on every rank; not synced, not reset)."""
        f = as_float64(features)
        if f.ndim != 2:
            raise ValueError(f"reference features must be [n, d], got shape {f.shape}")
        self._reference = f

    def update(self, features: torch.Tensor, real: bool = False, index=None) -> None:
        """``features [N, d]``; ``index [N]``: global image indices (default: arrival order on this rank — give
        indices under DDP when the result may depend on order, as KID's subsets do)."""
        x = features.detach().to(torch.float64)
        x = x.flatten(1) if x.ndim > 2 else x
        side = "real" if real else "gen"
        if index is None:
            index = torch.arange(self._arrivals[side], self._arrivals[side] + len(x))
        self._arrivals[side] += len(x)
        idx = torch.as_tensor(index, dtype=torch.long).reshape(-1)
        if len(idx) != len(x):
            raise ValueError(f"{len(x)} feature vectors but {len(idx)} indices")
        if len(x):
            d = int(self.feature_dim)
            if d not in (0, x.shape[1]):
                raise ValueError(f"features have dimension {x.shape[1]}, earlier ones {d}")
            self.feature_dim = torch.tensor(x.shape[1], dtype=torch.long, device=self.device)
        getattr(self, f"{side}_features").append(x.reshape(-1).to(self.device))
        getattr(self, f"{side}_index").append(idx.to(self.device))

    def sync(self, *args, **kwargs):
        for side in ("gen", "real"):
            if isinstance(getattr(self, f"{side}_features"), list) and not getattr(self, f"{side}_features"):
                getattr(self, f"{side}_features").append(torch.zeros(0, dtype=torch.float64, device=self.device))
                getattr(self, f"{side}_index").append(torch.zeros(0, dtype=torch.long, device=self.device))
        return super().sync(*args, **kwargs)

    def reset(self) -> None:
        super().reset()
        self._arrivals = {"gen": 0, "real": 0}

    def _side(self, side: str) -> np.ndarray:
        feats = getattr(self, f"{side}_features")
        if isinstance(feats, list) and not feats:
            return np.zeros((0, int(self.feature_dim)))
        f = as_float64(dim_zero_cat(feats))
        idx = dim_zero_cat(getattr(self, f"{side}_index")).cpu().numpy()
        f = f.reshape(len(idx), -1) if len(idx) else np.zeros((0, int(self.feature_dim)))
        return f[np.argsort(idx, kind="stable")]

    def generated(self) -> np.ndarray:
        return self._side("gen")

    def real(self) -> np.ndarray:
        if self._reference is not None:
            return self._reference
        r = self._side("real")
        if not len(r):
            raise ValueError(f"{type(self).__name__}: no real features (set_reference_features or update(real=True))")
        return r


class KernelDistance(FeatureSetMetric):
    """KID (:func:`msdm.metrics.realism.kid.kernel_inception_distance`) on the gathered sets.

    ``compute()`` → ``{"kid", "kid_std", "low", "high"}`` float64 tensors: whole sets with a jackknife error and
    ``kid ± 1.96·SE`` by default; with ``subsets`` the mean and std over seeded subsets (and the same interval form).
    """

    higher_is_better = False

    def __init__(self, subsets: int | None = None, subset_size: int = 1000, seed: int = 0, degree: int = 3,
                 gamma: float | None = None, coef: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.subsets, self.subset_size, self.seed = subsets, subset_size, seed
        self.degree, self.gamma, self.coef = degree, gamma, coef
        self.last_result = None

    def compute(self) -> dict[str, torch.Tensor]:
        r = kernel_inception_distance(self.real(), self.generated(), self.subsets, self.subset_size, self.seed,
                                      self.degree, self.gamma, self.coef)
        self.last_result = r
        iv = normal_interval(r.value, r.std)
        return {k: torch.tensor(v, dtype=torch.float64) for k, v in
                {"kid": r.value, "kid_std": r.std, "low": iv.low, "high": iv.high}.items()}


class ManifoldMetrics(FeatureSetMetric):
    """Precision / recall (k = 3) and density / coverage (k = 5) on the gathered sets (:mod:`msdm.metrics.realism.prdc`).

    ``compute()`` → ``{"precision", "recall", "density", "coverage"}`` float64 tensors; :attr:`intervals` then
    holds their percentile-bootstrap intervals over images (given the manifolds).
    """

    higher_is_better = True

    def __init__(self, k_pr: int = PR_K, k_dc: int = DC_K, num_bootstrap: int = 1000, **kwargs):
        super().__init__(**kwargs)
        self.k_pr, self.k_dc, self.num_bootstrap = k_pr, k_dc, num_bootstrap
        self.intervals: dict[str, dict] = {}
        self.last_scores = None

    def compute(self) -> dict[str, torch.Tensor]:
        s = manifold_scores(self.real(), self.generated(), self.k_pr, self.k_dc)
        self.last_scores = s
        per_item = {"precision": s.in_real_manifold, "recall": s.in_fake_manifold, "density": s.real_balls_hit,
                    "coverage": s.real_ball_covered}
        self.intervals = {k: percentile_bootstrap_mean(v, self.num_bootstrap).as_dict() for k, v in per_item.items()}
        return {k: torch.tensor(getattr(s, k), dtype=torch.float64) for k in per_item}


def set_metric_figures(sets: dict, n_real: int, n_generated: int, fid: float | None = None) -> tuple[dict, dict]:
    """Compute the gathered set metrics of a validation (``{"kid": KernelDistance, "prdc": ManifoldMetrics}``, either
    optional): ``(values to log, figures with n and interval)`` as ``msdm evaluate`` reports them. ``n_generated`` is
    the count over all ranks (after ``compute`` torchmetrics restores each rank's own share). P/R/D/C are skipped
    while there are fewer images than their k nearest neighbours need."""
    values, figures = {}, {}
    if "kid" in sets:
        r = {k: float(v) for k, v in sets["kid"].compute().items()}
        values.update(kid=r["kid"], kid_low=r["low"], kid_high=r["high"])
        figures["KID"] = {"value": r["kid"], "interval": {"low": r["low"], "high": r["high"], "level": 0.95}}
    if "prdc" in sets:
        m = sets["prdc"]
        if min(n_generated, n_real) > max(m.k_pr, m.k_dc):
            for k, v in m.compute().items():
                iv = m.intervals[k]
                values.update({k: float(v), f"{k}_low": iv["low"], f"{k}_high": iv["high"]})
                figures[k] = {"value": float(v), "interval": iv}
    n_gen = int(n_generated)
    values.update(n_generated=float(n_gen), n_real=float(n_real))
    if fid is not None:
        figures["FID"] = {"value": fid}
    return values, {k: {**f, "n_real": n_real, "n_generated": n_gen} for k, f in figures.items()}
