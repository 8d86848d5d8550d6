"""Start-up time of the commands a user types first, against a baseline commit, measured in one run.

    python bench/startup.py                      # baseline: 28dd971 (main before issue 23), 5 runs each
    python bench/startup.py --baseline HEAD~3 --runs 9 --commands="--help,presets,evaluate --help,fit --help"

The baseline tree is ``git archive``d into a temporary folder; each command runs as ``python -m msdm ...`` in a fresh
interpreter with ``PYTHONPATH`` set to the tree, alternating baseline and current so machine load hits both alike.
Prints the median wall time of each and the ratio current / baseline (< 1 = faster). Goal (issue 23): ``msdm
--help``, ``msdm presets`` and ``msdm evaluate --help`` within 3 s on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_BASELINE = "28dd971"  # main before the issue-23 work
DEFAULT_COMMANDS = ["--help", "presets", "evaluate --help"]


def export_tree(ref: str, dest: Path) -> Path:
    archive = dest / "tree.tar"
    with open(archive, "wb") as f:
        subprocess.run(["git", "-C", str(ROOT), "archive", ref], stdout=f, check=True)
    with tarfile.open(archive) as t:
        t.extractall(dest / "tree", filter="data")
    return dest / "tree"


def time_once(tree: Path, command: str) -> float:
    env = {**os.environ, "PYTHONPATH": str(tree), "HF_HUB_OFFLINE": "1"}
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "msdm", *shlex.split(command)], env=env, cwd=tree,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"`msdm {command}` failed in {tree}:\n{r.stderr[-2000:]}")
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baseline", default=DEFAULT_BASELINE, help="git ref to compare with")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--commands", default=",".join(DEFAULT_COMMANDS),
                    help="comma-separated msdm command lines (default: %(default)s)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = export_tree(args.baseline, Path(tmp))
        print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; baseline {args.baseline}, "
              f"current {ROOT} (working tree); median of {args.runs} runs")
        print(f"{'command':<24} {'baseline s':>11} {'current s':>10} {'ratio':>7}")
        for command in [c.strip() for c in args.commands.split(",") if c.strip()]:
            times = {"base": [], "cur": []}
            for _ in range(args.runs):
                times["base"].append(time_once(base, command))
                times["cur"].append(time_once(ROOT, command))
            b, c = statistics.median(times["base"]), statistics.median(times["cur"])
            print(f"msdm {command:<19} {b:>11.2f} {c:>10.2f} {c / b:>7.3f}", flush=True)


if __name__ == "__main__":
    main()
