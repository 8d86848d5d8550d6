"""Mean ± std of the metrics over runs (seeds), as Prompt to Polyp reports them (5 runs per model), in Markdown.

A run is a ``metrics.json`` written by ``msdm evaluate`` (its ``"scores"``), any JSON of ``{name: number}``, a
Lightning ``CSVLogger`` ``metrics.csv``, or a TensorBoard log folder (``events.out.tfevents.*``, what every shipped
config's ``TensorBoardLogger`` writes; all event files of the folder are read, so a run resumed into its own version
folder counts once). From logs, each metric's value at the latest step is taken, ``test/…`` (``msdm test``, the
metric callbacks at test end) preferred over a bare name over ``val/…``. Runs are grouped into table rows by an explicit ``LABEL=PATH``, else by the run folder's parent name
(``runs/flux/seed0`` → ``flux``), or not at all.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

__all__ = ["METRICS", "canonical_name", "find_metrics_file", "load_run_metrics", "aggregate", "markdown_table"]

# (canonical key, column title); ↑ higher is better, ↓ lower is better (Prompt to Polyp Table 2–3)
METRICS = [("fidelity", "Fidelity ↑"), ("agreement", "Agreement ↑"), ("diversity", "Diversity ↑"),
           ("FBD", "FBD ↓"), ("FID", "FID ↓")]
_CANON = {k.lower(): k for k, _ in METRICS}


def canonical_name(name: str) -> str | None:
    """``"test/fbd"`` → ``"FBD"``, ``"fidelity"`` → ``"fidelity"``; ``None`` for anything else."""
    return _CANON.get(name.rsplit("/", 1)[-1].lower())


EVENTS_PREFIX = "events.out.tfevents."
_VERSION = re.compile(r"^version_(\d+)$")


def _has_events(folder: Path) -> bool:
    return any(p.name.startswith(EVENTS_PREFIX) for p in folder.iterdir() if p.is_file())


def find_metrics_file(run: str | os.PathLike) -> Path:
    """The metrics of a run: the path itself, ``metrics.json``/``metrics.csv`` in it, a folder of TensorBoard event
    files (the run folder or the one below it). Several ``version_N`` folders of one experiment: the newest."""
    run = Path(run)
    if run.is_file():
        return run.parent if run.name.startswith(EVENTS_PREFIX) else run
    if not run.is_dir():
        raise FileNotFoundError(f"run not found: {run}")
    for name in ("metrics.json", "metrics.csv"):
        if (run / name).is_file():
            return run / name
    if _has_events(run):
        return run
    logs = sorted({p.parent for p in run.rglob(f"{EVENTS_PREFIX}*")})
    logs = [f for f in logs if not any(a in f.parents for a in logs)]  # a log folder's sub-writers belong to it
    found = sorted(run.rglob("metrics.json")) or sorted(run.rglob("metrics.csv")) or logs
    if len(found) == 1:
        return found[0]
    if not found:
        raise FileNotFoundError(f"no metrics.json, metrics.csv or TensorBoard event files in {run}")
    versions = {f: _VERSION.match(f.name) for f in found}
    if all(versions.values()) and len({f.parent for f in found}) == 1:  # version_0, version_1, ... of one logger
        newest = max(found, key=lambda f: int(versions[f].group(1)))
        warnings.warn(f"{run}: {len(found)} logger versions; reporting the newest, {newest} (pass another explicitly)",
                      stacklevel=2)
        return newest
    raise ValueError(f"{run} holds several runs ({', '.join(str(f) for f in found[:4])}…): pass one")


_PREFIX_RANK = {"test": 0, "": 1, "val": 2}  # test/… (msdm test) wins over a bare name, which wins over val/…


def _prefix_rank(name: str) -> int:
    return _PREFIX_RANK.get(name.rsplit("/", 1)[0] if "/" in name else "", 3)


def tensorboard_scalars(folder: str | os.PathLike) -> dict[str, float]:
    """``{tag: value at the latest step}`` of every scalar in a TensorBoard log folder (all its event files)."""
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={SCALARS: 0})  # 0: keep every value, not a sample
    acc.Reload()
    out = {}
    for tag in acc.Tags().get(SCALARS, []):
        events = acc.Scalars(tag)
        if events:  # a resumed run may log a step twice: the later write wins
            out[tag] = float(max(events, key=lambda e: (e.step, e.wall_time)).value)
    return out


def load_run_metrics(run: str | os.PathLike) -> dict[str, float]:
    """``{canonical metric: value}`` of one run (unrounded)."""
    path = find_metrics_file(run)
    out: dict[str, float] = {}
    if path.is_dir():  # TensorBoard event files
        best: dict[str, tuple[int, float]] = {}
        for k, v in tensorboard_scalars(path).items():
            c = canonical_name(k)
            if c and not math.isnan(v) and (c not in best or _prefix_rank(k) < best[c][0]):
                best[c] = (_prefix_rank(k), v)
        return {c: v for c, (_, v) in best.items()}
    if path.suffix == ".csv":
        # the last logged value of each column
        best = {}
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                for k, v in row.items():
                    c = canonical_name(k or "")
                    if c and v not in ("", None):
                        r = _prefix_rank(k)
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
