"""The realism figures of one generated set against one real set, each with its n and its interval.

:func:`realism_figures` turns two feature sets (Inception for FID, KID, P/R, D/C; BiomedCLIP for FBD) into
``{name: {"value", "interval", "n_real", "n_generated", ...}}``; :func:`format_figures` prints them one per line
with n and interval, and the stability warnings of :data:`msdm.metrics.realism.intervals.STABILITY_RULES` under them. What
``msdm evaluate`` prints and writes to ``metrics.json`` (``"figures"``).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from msdm.metrics.realism.frechet import as_float64, frechet_distance
from msdm.metrics.realism.intervals import (
    format_figure,
    frechet_bootstrap,
    normal_interval,
    percentile_bootstrap_mean,
    stability_warnings,
)
from msdm.metrics.realism.kid import kernel_inception_distance
from msdm.metrics.realism.prdc import DC_K, PR_K, manifold_scores

__all__ = ["frechet_figure", "realism_figures", "format_figures", "FIGURE_ORDER"]

FIGURE_ORDER = ["FID", "FBD", "KID", "precision", "recall", "density", "coverage", "copy_fraction"]
_TITLES = {"FID": "FID ↓", "FBD": "FBD ↓", "KID": "KID ↓", "precision": "precision ↑", "recall": "recall ↑",
           "density": "density ↑", "coverage": "coverage ↑", "copy_fraction": "copy fraction ↓"}


def frechet_figure(gen, real, num_bootstrap: int = 200, seed: int = 0) -> dict:
    """Fréchet distance with ``± 1.96 · SE`` of a bootstrap over both sets (:mod:`msdm.metrics.realism.intervals`)."""
    g, r = as_float64(gen), as_float64(real)
    value = frechet_distance(g, r)
    out = {"value": value, "n_real": len(r), "n_generated": len(g)}
    if num_bootstrap and len(g) > 2 and len(r) > 2:
        boot = frechet_bootstrap(g, r, num_bootstrap, seed)
        se = float(np.std(boot, ddof=1))
        iv = normal_interval(value, se, method=f"± 1.96 · SE of a bootstrap over both sets ({num_bootstrap})")
        out.update(interval=iv.as_dict(), se=se, bootstrap_mean=float(boot.mean()))
    return out


def realism_figures(gen_inception=None, real_inception=None, gen_biomedclip=None, real_biomedclip=None,
                    kid: bool = True, prdc: bool = True, k_pr: int = PR_K, k_dc: int = DC_K,
                    num_bootstrap: int = 200, seed: int = 0) -> dict[str, dict]:
    """FID / KID / P/R / D/C on Inception features and FBD on BiomedCLIP features, whichever pairs are given."""
    figs: dict[str, dict] = {}
    if gen_inception is not None and real_inception is not None:
        g, r = as_float64(gen_inception), as_float64(real_inception)
        figs["FID"] = frechet_figure(g, r, num_bootstrap, seed)
        if kid:
            k = kernel_inception_distance(r, g)
            iv = normal_interval(k.value, k.std, method=f"± 1.96 · SE ({k.method})")
            figs["KID"] = {"value": k.value, "interval": iv.as_dict(), "se": k.std, "n_real": len(r),
                           "n_generated": len(g)}
        if prdc and min(len(g), len(r)) > max(k_pr, k_dc):
            s = manifold_scores(r, g, k_pr, k_dc)
            per_item = {"precision": s.in_real_manifold, "recall": s.in_fake_manifold, "density": s.real_balls_hit,
                        "coverage": s.real_ball_covered}
            for name, v in per_item.items():
                iv = percentile_bootstrap_mean(v, 1000, seed=seed).as_dict()
                iv["method"] += ", given the k-NN manifolds"
                figs[name] = {"value": getattr(s, name), "interval": iv, "n_real": len(r), "n_generated": len(g),
                              "k": k_dc if name in ("density", "coverage") else k_pr}
    if gen_biomedclip is not None and real_biomedclip is not None:
        figs["FBD"] = frechet_figure(gen_biomedclip, real_biomedclip, num_bootstrap, seed)
    return figs


def format_figures(figures: Mapping[str, Mapping], decimals: int = 2) -> str:
    """One line per figure: ``name  value [low, high]  (n real / n generated)`` + the stability warnings."""
    lines = []
    for name in [k for k in FIGURE_ORDER if k in figures] + [k for k in figures if k not in FIGURE_ORDER]:
        f = figures[name]
        d = 4 if name in ("KID",) else (3 if name in ("precision", "recall", "density", "coverage", "copy_fraction")
                                        else decimals)
        iv = f.get("interval")
        n = f"n real {f['n_real']} / generated {f['n_generated']}" if "n_real" in f else \
            f"n train {f.get('n_train')} / generated {f['n_generated']}"
        lines.append(f"{_TITLES.get(name, name):<16} {format_figure(f['value'], iv, d):<28} ({n})")
    warn = stability_warnings({k: {**v, "n_real": v.get("n_real", v.get("n_train"))} for k, v in figures.items()})
    return "\n".join(lines + ([""] + warn if warn else []))
