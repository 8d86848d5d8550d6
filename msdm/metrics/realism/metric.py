"""torchmetrics ``Metric`` classes over *features*: FID/FBD (Fréchet distance) and the challenge's prompt metrics.

The metrics take features, not images: the extractor stays outside (on a callback or in a command), so no metric
state and no module state ever holds its weights (GUIDE §4). States sync under DDP:

* :class:`FrechetDistance` (:class:`FID`, :class:`FBD`) keeps float64 moments (Σx, Σxxᵀ, n) of the generated
  features, summed across ranks — exact, O(d²) memory whatever the number of images. The reference side is either
  fixed statistics (:meth:`~FrechetDistance.set_reference_stats`, e.g. cached real statistics: every rank holds the
  same, nothing to sync) or real features given with ``update(x, real=True)`` (summed like the generated side).
* :class:`PromptMetrics` keeps the features with their prompt id and image index (``cat`` states, gathered across
  ranks) and regroups them by prompt in :meth:`~PromptMetrics.compute`, sorted by (prompt, image index), so the
  result does not depend on how prompts were sharded over ranks — also when a rank got no prompt at all and never
  called ``update`` (it syncs typed empty states; torchmetrics' own placeholder is a float 1-D tensor, which does
  not match the other ranks' integer ids and aborted the job).

``compute()`` all-gathers: call it on every rank, never under ``rank_zero_only`` (torchmetrics#2684), and log the
(identical) result with ``sync_dist=False``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from msdm.metrics.realism.challenge import (
    challenge_pairs,
    challenge_scores,
    fid_to_real,
    fidelity_from_fid,
    per_prompt_metrics,
)
from msdm.metrics.realism.frechet import as_float64, frechet_distance, frechet_distance_from_stats

__all__ = ["FrechetDistance", "FID", "FBD", "PairedFrechetDistance", "PromptMetrics"]


class FrechetDistance(Metric):
    """Fréchet distance between generated features and a reference (fixed statistics or synced real features).

    ``update(features [N, d], real=False)``; ``compute()`` → float64 scalar tensor.
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(self, feature_dim: int, **kwargs):
        super().__init__(**kwargs)
        self.feature_dim = int(feature_dim)
        d = self.feature_dim
        for side in ("gen", "real"):
            self.add_state(f"{side}_sum", torch.zeros(d, dtype=torch.float64), dist_reduce_fx="sum")
            self.add_state(f"{side}_outer", torch.zeros(d, d, dtype=torch.float64), dist_reduce_fx="sum")
            self.add_state(f"{side}_n", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self._reference: tuple[np.ndarray, np.ndarray] | None = None

    def set_reference_stats(self, mu, sigma) -> None:
        """Use fixed reference statistics (mean ``[d]``, covariance ``[d, d]``); they are not synced or reset."""
        mu, sigma = as_float64(mu).ravel(), as_float64(sigma)
        if mu.shape != (self.feature_dim,) or sigma.shape != (self.feature_dim, self.feature_dim):
            raise ValueError(f"reference statistics {mu.shape}/{sigma.shape} do not match feature_dim {self.feature_dim}")
        self._reference = (mu, sigma)

    def update(self, features: torch.Tensor, real: bool = False) -> None:
        x = features.detach().to(device=self.gen_sum.device, dtype=torch.float64)
        x = x.flatten(1) if x.ndim > 2 else x
        if x.shape[1] != self.feature_dim:
            raise ValueError(f"features have dimension {x.shape[1]}, expected {self.feature_dim}")
        side = "real" if real else "gen"
        setattr(self, f"{side}_sum", getattr(self, f"{side}_sum") + x.sum(0))
        setattr(self, f"{side}_outer", getattr(self, f"{side}_outer") + x.T @ x)
        setattr(self, f"{side}_n", getattr(self, f"{side}_n") + x.shape[0])

    @staticmethod
    def _stats(s: torch.Tensor, outer: torch.Tensor, n: torch.Tensor, what: str) -> tuple[np.ndarray, np.ndarray]:
        n = float(n)
        if n < 2:
            raise ValueError(f"{what}: {n:.0f} feature vector(s) in total; a covariance needs at least 2")
        s, outer = as_float64(s), as_float64(outer)
        mu = s / n
        # Σ = (Σxxᵀ − n μμᵀ)/(n − 1), in float64 (sample covariance, ddof 1, as np.cov)
        return mu, (outer - n * np.outer(mu, mu)) / (n - 1)

    def compute(self) -> torch.Tensor:
        mu1, sigma1 = self._stats(self.gen_sum, self.gen_outer, self.gen_n, "generated")
        if self._reference is not None:
            mu2, sigma2 = self._reference
        else:
            mu2, sigma2 = self._stats(self.real_sum, self.real_outer, self.real_n, "real (no reference statistics set)")
        return torch.tensor(frechet_distance_from_stats(mu1, sigma1, mu2, sigma2), dtype=torch.float64)


class FID(FrechetDistance):
    """Fréchet Inception Distance on 2048-d Inception pool features (:class:`~msdm.metrics.realism.features.InceptionExtractor`)."""

    def __init__(self, feature_dim: int = 2048, **kwargs):
        super().__init__(feature_dim, **kwargs)


class FBD(FrechetDistance):
    """Fréchet BiomedCLIP Distance on 768-d BiomedCLIP features (:class:`~msdm.metrics.realism.features.BiomedCLIPExtractor`)."""

    def __init__(self, feature_dim: int = 768, **kwargs):
        super().__init__(feature_dim, **kwargs)


class PairedFrechetDistance(Metric):
    """Fréchet distance between two feature sets both seen during evaluation (e.g. images and their VAE
    reconstructions), keeping the features (``cat`` states, gathered across ranks) rather than moments.

    :func:`~msdm.metrics.realism.frechet.frechet_distance` then takes the exact sample path when there are fewer images than
    feature dimensions (an n×n problem: milliseconds for a small test split, where the d×d statistics path of
    :class:`FrechetDistance` costs a minute on a CPU for Inception's d = 2048) and the statistics path otherwise.
    Memory: 8 KB per image and side for 2048-d features. ``update(features, real)``; ``compute()`` → float64 scalar.
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("real", default=[], dist_reduce_fx="cat")
        self.add_state("other", default=[], dist_reduce_fx="cat")

    def update(self, features: torch.Tensor, real: bool = False) -> None:
        x = features.detach().flatten(1).to(torch.float64)
        (self.real if real else self.other).append(x)

    def compute(self) -> torch.Tensor:
        from msdm.metrics.realism.frechet import frechet_distance

        real, other = dim_zero_cat(self.real), dim_zero_cat(self.other)
        return torch.tensor(frechet_distance(real.cpu().numpy(), other.cpu().numpy()), dtype=torch.float64)


class PromptMetrics(Metric):
    """Fidelity, Agreement, Diversity and FBD as the MEDVQA-GI script defines them, from features grouped by prompt.

    * ``update(features [N, d], prompt_ids [N], image_ids [N] | None)`` — prompt ids are integers (the challenge's
      1-based prompt numbers, or any ids); image ids order the images of a prompt (default: arrival order per rank).
    * :meth:`set_real_features` — ``{prompt id: [num_real, d]}`` real features each prompt is compared with (the
      same on every rank; not synced). Prompts without an entry get no Fidelity.
    * ``pairs``: ``"consecutive"`` (sorted ids paired (1, 2), (3, 4), … — the challenge), an explicit list of
      (original, rephrased) ids, or ``None`` (no pairs: no Agreement; Fidelity/Diversity/FBD over single prompts).

    ``compute()`` returns ``{"fidelity", "diversity", "fbd"[, "agreement"]}`` as float64 scalar tensors. With pairs,
    this is :func:`msdm.metrics.realism.challenge.challenge_scores` (a pair's real set is its first prompt's); without,
    Fidelity is the mean over prompts of 1000/(1 + FD(prompt, its real images)), Diversity the mean over prompts and
    FBD = FD(all generated, real features stacked once per prompt). The per-prompt table of the last ``compute()``
    is kept in :attr:`per_prompt` (see :func:`msdm.metrics.realism.challenge.per_prompt_metrics`).
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    def __init__(self, pairs: str | Sequence[tuple[int, int]] | None = "consecutive",
                 reference_compatible: bool = False, single_real: str = "error", **kwargs):
        super().__init__(**kwargs)
        if isinstance(pairs, str) and pairs != "consecutive":
            raise ValueError(f"pairs must be 'consecutive', a list of (a, b) or None, got {pairs!r}")
        self.pairs = pairs if pairs is None or isinstance(pairs, str) else [(int(a), int(b)) for a, b in pairs]
        self.reference_compatible, self.single_real = bool(reference_compatible), single_real
        # features are stored flattened (1-D) with their width in feature_dim, so a rank without data can send an
        # empty state of the same rank and dtype as the others (it does not know the width)
        self.add_state("features", [], dist_reduce_fx="cat")
        self.add_state("prompt_ids", [], dist_reduce_fx="cat")
        self.add_state("image_ids", [], dist_reduce_fx="cat")
        self.add_state("feature_dim", torch.tensor(0, dtype=torch.long), dist_reduce_fx="max")
        self.real_feats_by_prompt: dict[int, np.ndarray] = {}
        self.per_prompt: dict[int, dict] = {}
        self._next_image: dict[int, int] = {}

    def set_real_features(self, real_feats_by_prompt: Mapping[int, np.ndarray]) -> None:
        self.real_feats_by_prompt = {int(k): as_float64(v) for k, v in real_feats_by_prompt.items()}

    def update(self, features: torch.Tensor, prompt_ids, image_ids=None) -> None:
        feats = features.detach().float()
        feats = feats.flatten(1) if feats.ndim > 2 else feats
        pids = torch.as_tensor(prompt_ids, dtype=torch.long).reshape(-1).cpu()
        if len(pids) != len(feats):
            raise ValueError(f"{len(feats)} feature vectors but {len(pids)} prompt ids")
        if image_ids is None:  # arrival order within each prompt on this rank
            image_ids = []
            for p in pids.tolist():
                image_ids.append(self._next_image.get(p, 0))
                self._next_image[p] = image_ids[-1] + 1
        iids = torch.as_tensor(image_ids, dtype=torch.long).reshape(-1)
        device = self.device
        if len(feats):
            d = int(self.feature_dim)
            if d not in (0, feats.shape[1]):
                raise ValueError(f"features have dimension {feats.shape[1]}, earlier ones {d}")
            self.feature_dim = torch.tensor(feats.shape[1], dtype=torch.long, device=device)
        self.features.append(feats.reshape(-1).to(device))
        self.prompt_ids.append(pids.to(device))
        self.image_ids.append(iids.to(device).long())

    def sync(self, *args, **kwargs):
        """Before gathering, give a rank that never called ``update`` typed empty states (module docstring)."""
        if isinstance(self.features, list) and not self.features:
            device = self.device
            self.features.append(torch.zeros(0, dtype=torch.float32, device=device))
            self.prompt_ids.append(torch.zeros(0, dtype=torch.long, device=device))
            self.image_ids.append(torch.zeros(0, dtype=torch.long, device=device))
        return super().sync(*args, **kwargs)

    def reset(self) -> None:
        super().reset()
        self._next_image = {}

    def grouped_features(self) -> dict[int, np.ndarray]:
        """``{prompt id: [num_images, d]}`` float64, images sorted by image id (call after or inside a sync)."""
        if isinstance(self.features, list) and not self.features:
            return {}
        feats = as_float64(dim_zero_cat(self.features))
        pids = dim_zero_cat(self.prompt_ids).cpu().numpy().astype(np.int64)
        iids = dim_zero_cat(self.image_ids).cpu().numpy().astype(np.int64)
        if feats.size == 0:
            return {}
        feats = feats.reshape(len(pids), int(self.feature_dim))
        order = np.lexsort((iids, pids))  # by prompt, then image: independent of the rank layout
        feats, pids = feats[order], pids[order]
        bounds = np.flatnonzero(np.diff(pids)) + 1
        return {int(g[0]): f for g, f in zip(np.split(pids, bounds), np.split(feats, bounds))}

    def compute(self) -> dict[str, torch.Tensor]:
        gen = self.grouped_features()
        if not gen:
            raise ValueError("PromptMetrics.compute() before any update")
        real = self.real_feats_by_prompt
        if self.pairs is not None:
            pairs = challenge_pairs(gen, self.reference_compatible) if self.pairs == "consecutive" else self.pairs
            scores = challenge_scores(gen, real, single_real=self.single_real, pairs=pairs)
            # per prompt, a B prompt is compared with its A prompt's real images, as in the challenge
            real_pp = {**real, **{b: real[a] for a, b in pairs if a in real}}
            self.per_prompt = per_prompt_metrics(gen, real_pp, pairs, self.single_real)
            out = {k: scores[k] for k in ("fidelity", "agreement", "diversity")} | {"fbd": scores["FBD"]}
        else:
            scored = [p for p in gen if p in real]
            if not scored:
                raise ValueError("no prompt has real features (set_real_features) to compute Fidelity/FBD with")
            fids = [fid_to_real(gen[p], real[p], self.single_real, what=f"prompt {p}") for p in scored]
            self.per_prompt = per_prompt_metrics(gen, real, None, self.single_real)
            out = {
                "fidelity": float(np.mean([fidelity_from_fid(f) for f in fids])),
                "diversity": float(np.mean([m["diversity"] for m in self.per_prompt.values()])),
                "fbd": frechet_distance(np.concatenate([gen[p] for p in scored]),
                                        np.concatenate([real[p] for p in scored])),
            }
        return {k: torch.tensor(v, dtype=torch.float64) for k, v in out.items()}
