"""Mean ± std of the metrics over runs (seeds), as Prompt to Polyp reports them (5 runs per model), in Markdown.

A run is a ``metrics.json`` written by ``msdm evaluate`` (its ``"scores"``), any JSON of ``{name: number}``, a
Lightning ``CSVLogger`` ``metrics.csv``, or a TensorBoard log folder (``events.out.tfevents.*``, what every shipped
config's ``TensorBoardLogger`` writes; all event files of the folder are read, so a run resumed into its own version
folder counts once). From logs, each metric's value at the latest step is taken, ``test/…`` (``msdm test``, the
metric callbacks at test end) preferred over a bare name over ``val/…``. Where a run states them (``msdm evaluate``'s
``"figures"``, the callbacks' ``…/{metric}_low`` / ``_high`` / ``n_real`` / ``n_generated``), a single run's cell
shows its 95 % interval and the table its n real / n generated, with the stability warnings of
:data:`msdm.metrics.realism.intervals.STABILITY_RULES` under it; several runs show mean ± std. Runs are grouped into table rows by an explicit ``LABEL=PATH``, else by the run folder's parent name
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

from msdm.errors import InputError, PathNotFoundError

__all__ = ["METRICS", "canonical_name", "find_metrics_file", "load_run_metrics", "load_run_figures", "aggregate",
           "markdown_table"]

# (canonical key, column title); ↑ higher is better, ↓ lower is better (Prompt to Polyp Table 2–3)
METRICS = [("fidelity", "Fidelity ↑"), ("agreement", "Agreement ↑"), ("diversity", "Diversity ↑"),
           ("FBD", "FBD ↓"), ("FID", "FID ↓"), ("KID", "KID ↓"), ("precision", "Precision ↑"), ("recall", "Recall ↑"),
           ("density", "Density ↑"), ("coverage", "Coverage ↑"), ("copy_fraction", "Copy fraction ↓")]
_DECIMALS = {"KID": 4, "precision": 3, "recall": 3, "density": 3, "coverage": 3, "copy_fraction": 3}
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
        raise PathNotFoundError(f"run not found: {run}", run)
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
        raise PathNotFoundError(f"no metrics.json, metrics.csv or TensorBoard event files in {run}", run)
    versions = {f: _VERSION.match(f.name) for f in found}
    if all(versions.values()) and len({f.parent for f in found}) == 1:  # version_0, version_1, ... of one logger
        newest = max(found, key=lambda f: int(versions[f].group(1)))
        warnings.warn(f"{run}: {len(found)} logger versions; reporting the newest, {newest} (pass another explicitly)",
                      stacklevel=2)
        return newest
    raise InputError(f"{run} holds several runs ({', '.join(str(f) for f in found[:4])}…): pass one")


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


def _figures_from_scalars(named: Mapping[str, float]) -> dict[str, dict]:
    """``{canonical: {"interval", "n_real", "n_generated"}}`` from logged ``{name}_low`` / ``_high`` and the n."""
    best: dict[str, dict] = {}
    for stage in ("val", "", "test"):  # later (higher-priority) stages overwrite
        pre = f"{stage}/" if stage else ""
        n = {k: named[pre + k] for k in ("n_real", "n_generated") if pre + k in named}
        for key, _ in METRICS:
            lo, hi = named.get(f"{pre}{key.lower()}_low"), named.get(f"{pre}{key.lower()}_high")
            if lo is not None and hi is not None:
                best[key] = {"interval": {"low": lo, "high": hi}, **{k: int(v) for k, v in n.items()}}
    return best


def load_run_figures(run: str | os.PathLike) -> dict[str, dict]:
    """``{canonical metric: {"interval", "n_real" | "n_train", "n_generated", ...}}`` where the run states them:
    ``msdm evaluate``'s ``"figures"``, or the realism callbacks' logged bounds and n. Empty when it does not."""
    path = find_metrics_file(run)
    if path.is_dir():
        return _figures_from_scalars(tensorboard_scalars(path))
    if path.suffix == ".csv":
        last: dict[str, float] = {}
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                last.update({k: float(v) for k, v in row.items() if k and v not in ("", None)})
        return _figures_from_scalars(last)
    data = json.loads(path.read_text())
    figs = data.get("figures", {}) if isinstance(data, Mapping) else {}
    return {c: dict(f) for k, f in figs.items() if (c := canonical_name(k)) and isinstance(f, Mapping)}


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
        groups.setdefault(label, []).append((path, load_run_metrics(path), load_run_figures(path)))
    table = {}
    for label, members in groups.items():
        row: dict = {"runs": len(members), "paths": [p for p, _, _ in members]}
        for key, _ in METRICS:
            values = [m[key] for _, m, _ in members if key in m and not math.isnan(m[key])]
            if values:
                row[key] = {"mean": float(np.mean(values)),
                            "std": float(np.std(values, ddof=1)) if len(values) > 1 else None, "n": len(values)}
                figs = [f[key] for _, m, f in members if key in m and key in f]
                if len(values) == 1 and figs and figs[0].get("interval"):
                    row[key]["interval"] = {k: figs[0]["interval"][k] for k in ("low", "high")}
                for side in ("n_real", "n_train", "n_generated", "n_calibration", "alpha"):
                    ns = sorted({f[side] for f in figs if f.get(side) is not None})
                    if ns:
                        row[key][side] = ns[0]  # the smallest n of the group: what the stability rule needs
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
            d = max(decimals, _DECIMALS.get(k, 0))
            cell = f"{m['mean']:.{d}f}"
            if m["std"] is not None:
                cell += f" ± {m['std']:.{d}f}"
            elif "interval" in m:
                cell += f" [{m['interval']['low']:.{d}f}, {m['interval']['high']:.{d}f}]"
            if m["n"] != row["runs"]:
                cell += f" (n={m['n']})"
            cells.append(cell)
        lines.append(f"| {label} | {row['runs']} | " + " | ".join(cells) + " |")
    return "\n".join(lines + _n_and_warnings(table, keys))


def _n_and_warnings(table: Mapping[str, Mapping], keys: Sequence[str]) -> list[str]:
    """Under the table: each row's n real / n generated behind its figures, and the stability warnings."""
    from msdm.metrics.realism.intervals import stability_warnings

    out, warn = [], []
    for label, row in table.items():
        ns = {k: row[k] for k in keys if k in row and row[k].get("n_generated") is not None}
        if not ns:
            continue
        parts = []
        for k, m in ns.items():
            ref = f"n real {m['n_real']}" if m.get("n_real") is not None else f"n train {m.get('n_train')}"
            parts.append(f"{k} ({ref} / generated {m['n_generated']})")
        out.append(f"{label}: " + ", ".join(parts))
        warn += [f"{label}: {w}" for w in stability_warnings(ns)]
    if not out:
        return []
    return ["", "n behind each figure (interval: 95 %; several runs: mean ± std over runs):"] + out + \
        ([""] + warn if warn else [])
