"""Mean ± std of the metrics over runs (seeds), as Prompt to Polyp reports them (5 runs per model), in Markdown.

A run is a ``metrics.json`` written by ``msdm evaluate`` (its ``"scores"``), any JSON of ``{name: number}``, or a
Lightning ``CSVLogger`` ``metrics.csv`` (the last logged value of each metric, ``test/…`` from the metric callbacks
preferred over ``val/…``). Runs are grouped into table rows by an explicit ``LABEL=PATH``, else by the run folder's parent name
(``runs/flux/seed0`` → ``flux``), or not at all.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from msdm.errors import InputError, PathNotFoundError

__all__ = ["METRICS", "canonical_name", "find_metrics_file", "load_run_metrics", "aggregate", "markdown_table"]

# (canonical key, column title); ↑ higher is better, ↓ lower is better (Prompt to Polyp Table 2–3)
METRICS = [("fidelity", "Fidelity ↑"), ("agreement", "Agreement ↑"), ("diversity", "Diversity ↑"),
           ("FBD", "FBD ↓"), ("FID", "FID ↓")]
_CANON = {k.lower(): k for k, _ in METRICS}


def canonical_name(name: str) -> str | None:
    """``"test/fbd"`` → ``"FBD"``, ``"fidelity"`` → ``"fidelity"``; ``None`` for anything else."""
    return _CANON.get(name.rsplit("/", 1)[-1].lower())


def find_metrics_file(run: str | os.PathLike) -> Path:
    """The metrics file of a run: the path itself, ``metrics.json``/``metrics.csv`` in it, or the one below it."""
    run = Path(run)
    if run.is_file():
        return run
    if not run.is_dir():
        raise PathNotFoundError(f"run not found: {run}", run)
    for name in ("metrics.json", "metrics.csv"):
        if (run / name).is_file():
            return run / name
    found = sorted(run.rglob("metrics.json")) or sorted(run.rglob("metrics.csv"))
    if len(found) == 1:
        return found[0]
    if not found:
        raise PathNotFoundError(f"no metrics.json or metrics.csv in {run}", run)
    raise InputError(f"{run} holds several metrics files ({', '.join(str(f) for f in found[:4])}…): pass one")


def load_run_metrics(run: str | os.PathLike) -> dict[str, float]:
    """``{canonical metric: value}`` of one run (unrounded)."""
    path = find_metrics_file(run)
    out: dict[str, float] = {}
    if path.suffix == ".csv":
        # the last logged value of each column; test/… (msdm test) wins over a bare name, which wins over val/…
        rank = {"test": 0, "": 1, "val": 2}
        best: dict[str, tuple[int, float]] = {}
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                for k, v in row.items():
                    c = canonical_name(k or "")
                    if c and v not in ("", None):
                        prefix = k.rsplit("/", 1)[0] if "/" in k else ""
                        r = rank.get(prefix, 3)
                        if c not in best or r <= best[c][0]:
                            best[c] = (r, float(v))
        return {c: v for c, (_, v) in best.items()}
    data = json.loads(path.read_text())
    scores = data.get("scores", data) if isinstance(data, Mapping) else {}
    for k, v in scores.items():
        c = canonical_name(k)
        if c and isinstance(v, (int, float)):
            out[c] = float(v)
    return out


def _label(arg: str, group_by: str) -> tuple[str, str]:
    if "=" in arg and not Path(arg).exists():
        label, path = arg.split("=", 1)
        return label, path
    p = Path(arg)
    if group_by == "parent":
        run_dir = p.parent if p.is_file() else p
        return run_dir.resolve().parent.name or str(run_dir), arg
    if group_by == "run":
        return p.name, arg
    return "all", arg


def aggregate(runs: Iterable[str], group_by: str = "parent") -> dict[str, dict]:
    """``{label: {"runs": n, "paths": [...], metric: {"mean", "std", "n"}}}``; std is the sample std (ddof 1)."""
    groups: dict[str, list[tuple[str, dict]]] = {}
    for arg in runs:
        label, path = _label(arg, group_by)
        groups.setdefault(label, []).append((path, load_run_metrics(path)))
    table = {}
    for label, members in groups.items():
        row: dict = {"runs": len(members), "paths": [p for p, _ in members]}
        for key, _ in METRICS:
            values = [m[key] for _, m in members if key in m and not math.isnan(m[key])]
            if values:
                row[key] = {"mean": float(np.mean(values)),
                            "std": float(np.std(values, ddof=1)) if len(values) > 1 else None, "n": len(values)}
        table[label] = row
    return table


def markdown_table(table: Mapping[str, Mapping], decimals: int = 2, metrics: Sequence[str] | None = None) -> str:
    """One row per group, ``mean ± std`` cells (just the value for a single run), 2 decimals as in the paper."""
    keys = [k for k, _ in METRICS if (metrics is None or k in metrics) and any(k in r for r in table.values())]
    titles = dict(METRICS)
    lines = ["| Model | Runs | " + " | ".join(titles[k] for k in keys) + " |",
             "|---|---:|" + "|".join("---:" for _ in keys) + "|"]
    for label, row in table.items():
        cells = []
        for k in keys:
            if k not in row:
                cells.append("–")
                continue
            m = row[k]
            cell = f"{m['mean']:.{decimals}f}"
            if m["std"] is not None:
                cell += f" ± {m['std']:.{decimals}f}"
            if m["n"] != row["runs"]:
                cell += f" (n={m['n']})"
            cells.append(cell)
        lines.append(f"| {label} | {row['runs']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
