"""Measure max |Δweight| between a resumed and an uninterrupted run, per stop kind × module (CPU, fixed seed).

    PYTHONPATH=.:tests python bench/resume_exactness.py [--kinds vae unet ...] [--stops max_steps mid_epoch ...]

Uses the tiny set-up of tests/resume_harness.py (7 steps, 4 per epoch; every stop lands mid-epoch). Stops:
``max_steps`` (stopped at step 5, resumed), ``mid_epoch`` (resumed from the step-3 checkpoint of an every-3-steps
``ModelCheckpoint``), ``sigterm`` / ``sigusr1`` (delivered during step 2; ``last`` written at step 3), ``kill9`` (a
subprocess killed with SIGKILL during step 5, resumed from its step-3 checkpoint), ``parent_sigterm`` /
``parent_sigusr1`` (sent by this process to a training subprocess). 0 everywhere means bit-exact resume.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import resume_harness as h  # noqa: E402

STOPS = ("max_steps", "mid_epoch", "sigterm", "sigusr1", "kill9", "parent_sigterm", "parent_sigusr1")


def _child(kind, mode, assets, root: Path) -> int:
    h.save_assets(assets, root / "assets.json")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]), "MSDM_TEST_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests/scripts/resume_child.py"), kind, str(root),
                             str(root / "assets.json"), mode], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    while not (root / "waiting").exists():
        if proc.poll() is not None:
            raise RuntimeError(f"child {kind}/{mode} exited early ({proc.returncode})")
        time.sleep(0.1)
    proc.send_signal({"kill": signal.SIGKILL, "sigterm": signal.SIGTERM, "sigusr1": signal.SIGUSR1}[mode])
    return proc.wait()


def measure(kind: str, stop: str, assets: dict, ref: dict, ref_root: Path, tmp: Path) -> float:
    root = tmp / f"{kind}_{stop}"
    root.mkdir()
    if stop == "max_steps":
        h.fit(kind, assets, root, max_steps=h.STOP_AT_STEP)
        ckpt = root / "last.ckpt"
    elif stop == "mid_epoch":
        ckpt = ref_root / f"epoch=0-step={h.EVERY_N_STEPS}.ckpt"
    elif stop in ("sigterm", "sigusr1"):
        try:
            h.fit(kind, assets, root, callbacks=[h.SignalAt(h.SIGNAL_AT_STEP, h.SIGNALS[stop])],
                  every_n_train_steps=None)
        except SystemExit:
            pass
        ckpt = root / "last.ckpt"
    else:
        mode = {"kill9": "kill", "parent_sigterm": "sigterm", "parent_sigusr1": "sigusr1"}[stop]
        _child(kind, mode, assets, root)
        ckpt = root / "last.ckpt"
    diff, _ = h.resume_and_compare(kind, assets, ckpt, root, ref)
    return diff


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--kinds", nargs="+", default=list(h.KINDS), choices=h.KINDS)
    ap.add_argument("--stops", nargs="+", default=list(STOPS), choices=STOPS)
    args = ap.parse_args()
    torch.set_num_threads(1)
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        assets = h.write_assets(tmp / "assets")
        for kind in args.kinds:
            ref_root = tmp / f"ref_{kind}"
            ref = h.final_weights(h.fit(kind, assets, ref_root))
            row = [kind]
            for stop in args.stops:
                row.append(measure(kind, stop, assets, ref, ref_root, tmp))
                print(f"{kind:<11} {stop:<15} max|dw| = {row[-1]:.3g}", flush=True)
            rows.append(row)
    print("\n| module | " + " | ".join(args.stops) + " |")
    print("|---|" + "---:|" * len(args.stops))
    for row in rows:
        print(f"| {row[0]} | " + " | ".join(f"{v:.3g}" for v in row[1:]) + " |")
    return 0 if all(v == 0 for row in rows for v in row[1:]) else 1


if __name__ == "__main__":
    sys.exit(main())
