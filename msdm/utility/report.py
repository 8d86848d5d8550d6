"""Summarise the runs of a utility experiment: mean ± std per arm, paired differences with intervals, a verdict;
written as JSON, a Markdown table and a plot (metric vs real-data fraction, one line per arm)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from msdm.utility import stats
from msdm.utility.metrics import LABELS, METRICS

#: The metric the verdict column reads (insensitive to the class prior).
PRIMARY = "balanced_accuracy"


def summarize(records: list[dict], probs: dict[str, np.ndarray], test_target: np.ndarray, test_strata: list,
              multilabel: bool, arms: list[str], fractions: list[float], seeds: list[int], n_boot: int = 1000,
              boot_seed: int = 0, level: float = 0.95) -> list[dict]:
    """One row per (fraction, arm), in plan order.

    ``records``: per run ``{"key", "fraction", "arm", "seed", "n_real", "n_synthetic", "metrics"}``; ``probs``:
    run key → test probabilities ``[N, C]``. Rows of arms other than ``real`` carry ``diff``: per metric the mean
    paired difference, its bootstrap interval and its paired-seed t interval.
    """
    by = {(r["fraction"], r["arm"], r["seed"]): r for r in records}
    idx = stats.stratified_bootstrap_indices(test_strata, n_boot, boot_seed)
    draws = stats.seed_draws(len(seeds), n_boot, boot_seed)
    resampled: dict[str, dict] = {}

    def boot(key):
        if key not in resampled:
            resampled[key] = stats.metrics_on_resamples(probs[key], test_target, idx, multilabel)
        return resampled[key]

    rows = []
    for f in fractions:
        for arm in arms:
            runs = [by[(f, arm, s)] for s in seeds if (f, arm, s) in by]
            if len(runs) != len(seeds):
                continue  # not run (yet)
            row = {"fraction": f, "arm": arm, "n_real": runs[0]["n_real"], "n_synthetic": runs[0]["n_synthetic"],
                   "seeds": seeds, "metrics": {}}
            for m in METRICS:
                values = [r["metrics"][m] for r in runs]
                mean, std = stats.mean_std(values)
                row["metrics"][m] = {"mean": mean, "std": std, "values": values}
            if arm != "real":
                base = [by[(f, "real", s)] for s in seeds]
                ci = stats.paired_bootstrap([boot(r["key"]) for r in runs], [boot(b["key"]) for b in base], draws, level)
                row["diff"] = {}
                for m in METRICS:
                    d = [r["metrics"][m] - b["metrics"][m] for r, b in zip(runs, base)]
                    t_ci = stats.paired_t_interval(d, level)
                    row["diff"][m] = {"mean": float(np.mean(d)), "per_seed": d, "ci_bootstrap": list(ci[m]),
                                      "ci_seed_t": list(t_ci) if t_ci else None}
                lo, hi = ci[PRIMARY]
                row["verdict"] = "helps" if lo > 0 else "hurts" if hi < 0 else "no clear difference"
            rows.append(row)
    return rows


def _pm(x: dict) -> str:
    return f"{x['mean']:.3f} ± {x['std']:.3f}"


def _diff(x: dict) -> str:
    lo, hi = x["ci_bootstrap"]
    return f"{x['mean']:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def markdown(rows: list[dict], level: float = 0.95, n_boot: int = 1000) -> str:
    """Two tables: absolute metrics (mean ± std over seeds), then differences vs real-only with intervals."""
    head = "| real fraction | arm | real imgs | synthetic imgs | " + " | ".join(LABELS[m] for m in METRICS) + " |"
    lines = [head, "|" + "---|" * (4 + len(METRICS))]
    for r in rows:
        lines.append(f"| {r['fraction']:g} | {r['arm']} | {r['n_real']} | {r['n_synthetic']} | "
                     + " | ".join(_pm(r["metrics"][m]) for m in METRICS) + " |")
    diffs = [r for r in rows if "diff" in r]
    if diffs:
        lines += ["", f"Difference vs real-only at the same fraction (paired by seed; mean [{int(level * 100)} % "
                      f"paired bootstrap interval over seeds and test images, {n_boot} replicates]); the verdict reads "
                      f"{LABELS[PRIMARY]}:", "",
                  "| real fraction | arm | " + " | ".join(f"Δ {LABELS[m]}" for m in METRICS) + " | verdict |",
                  "|" + "---|" * (3 + len(METRICS))]
        for r in diffs:
            lines.append(f"| {r['fraction']:g} | {r['arm']} | " + " | ".join(_diff(r["diff"][m]) for m in METRICS)
                         + f" | {r['verdict']} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: str | os.PathLike, title: str = "") -> Path:
    """Metric vs real-data fraction (log axis), one line per arm, error bars = std over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from msdm.io import atomic_file

    fig, axes = plt.subplots(1, len(METRICS), figsize=(4 * len(METRICS), 3.4), squeeze=False)
    arms = list(dict.fromkeys(r["arm"] for r in rows))
    fractions = sorted({r["fraction"] for r in rows})
    for ax, m in zip(axes[0], METRICS):
        for arm in arms:
            rs = sorted((r for r in rows if r["arm"] == arm), key=lambda r: r["fraction"])
            ax.errorbar([r["fraction"] for r in rs], [r["metrics"][m]["mean"] for r in rs],
                        yerr=[r["metrics"][m]["std"] for r in rs], marker="o", capsize=3, label=arm)
        if len(fractions) > 1:
            ax.set_xscale("log")
        ax.set_xticks(fractions, [f"{f:g}" for f in fractions])
        ax.minorticks_off()
        ax.set_xlabel("real-data fraction")
        ax.set_title(LABELS[m])
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    with atomic_file(path) as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)
    return path
