"""The figures of ``msdm annotate report`` (Prompt to Polyp Figures 5 and 6), drawn with matplotlib (Agg)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from msdm.annotate.study import ASPECT_IDS


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure_aspects(summary: dict, labels: dict[str, str], path: Path) -> None:
    """Grouped bars: one group per aspect, one bar per model, error bars = ±1 std (like Figure 5)."""
    plt = _plt()
    models = list(summary)
    x = np.arange(len(ASPECT_IDS))
    w = 0.8 / max(1, len(models))
    fig, ax = plt.subplots(figsize=(10, 4.2), dpi=100)
    for i, m in enumerate(models):
        means = [summary[m][a]["mean"] or 0 for a in ASPECT_IDS]
        stds = [summary[m][a]["std"] or 0 for a in ASPECT_IDS]
        ax.bar(x + (i - (len(models) - 1) / 2) * w, means, w, yerr=stds, capsize=3, label=m)
    ax.set_xticks(x, [labels[a].replace(" (", "\n(").replace(" of ", "\nof ") for a in ASPECT_IDS], fontsize=9)
    ax.set_ylim(0, 10.5)
    ax.set_ylabel("expert score (0-10), mean ± std")
    ax.set_title("Expert scores per aspect")
    ax.legend(ncol=len(models), loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def figure_ranks_vs_metrics(tier: dict, per_prompt: dict, corr: dict, models: list[str], metric_label: str,
                            metrics: dict, path: Path) -> None:
    """One panel per metric: the metric of each (prompt, model) set against its expert rank tier (box per rounded
    tier, points coloured by model), with ρ and τ in the title (like Figure 6); ``metrics``: ``{key: (label, _)}``."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.8), dpi=100)
    colors = {m: f"C{i}" for i, m in enumerate(models)}
    rng = np.random.default_rng(0)
    for ax, (m, (label, _)) in zip(np.atleast_1d(axes), metrics.items()):
        pts = [(tier[pk]["mean_rank"], per_prompt[pk][m], pk[1]) for pk in tier
               if pk in per_prompt and per_prompt[pk].get(m) is not None]
        if not pts:
            ax.set_axis_off()
            continue
        tiers = sorted({int(round(x)) for x, _, _ in pts})
        ax.boxplot([[y for x, y, _ in pts if int(round(x)) == t] for t in tiers], positions=tiers, widths=0.5,
                   showfliers=False, medianprops={"color": "k"})
        for model in models:
            sel = [(x, y) for x, y, mm in pts if mm == model]
            if sel:
                xs, ys = np.array(sel).T
                ax.scatter(xs + rng.uniform(-0.08, 0.08, len(xs)), ys, s=14, alpha=0.75, color=colors[model],
                           label=model)
        c = corr[m]
        stat = ("n/a" if c["spearman_rho"] is None else
                f"ρ={c['spearman_rho']:.2f} (p={c['spearman_p']:.2g}), τ={c['kendall_tau']:.2f}")
        ax.set_title(f"{label if m != 'fbd' else metric_label}\n{stat}", fontsize=10)
        ax.set_xlabel("expert rank tier (mean rank, 1 = best)")
        ax.set_xticks(tiers, [str(t) for t in tiers])
        ax.grid(alpha=0.3)
    handles, names = np.atleast_1d(axes)[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=len(models), frameon=False)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path)
    plt.close(fig)
