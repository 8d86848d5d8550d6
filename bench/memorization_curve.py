"""When does a small MSDM start to copy its training frames? Copy fraction and FID against training steps.

docs/metrics.md ("Memorization against training steps") holds the measured curves and the commands. Three steps:

1. ``prepare OUT``: the data folders (symlinks to ``../shared/data`` + a ``captions.csv`` with one constant caption)::

       OUT/train150/   the 150 frames of kvasir-seg            (a generator trained on them)
       OUT/train550/   those 150 + 400 frames of kvasir-seg-extra
       OUT/heldout/    the other 148 frames of kvasir-seg-extra (never trained on: FID reference and the copy
                       threshold's calibration set)

   (the 400 / 148 split of kvasir-seg-extra is a seeded permutation of its sorted file names).
2. train with the library's own path, ``msdm fit -c configs/memorization/{vae,unet}.yaml`` (commands in the doc);
   the U-Net run saves its weights every N steps.
3. ``score RUN_DIR ... --out CSV``: for every checkpoint, ``--num-images`` images with the EMA weights and with the
   raw weights, their copy fraction against the run's training frames (:mod:`msdm.metrics.memorization`, threshold
   calibrated on the held-out frames) and FID against the held-out frames.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CAPTION = "Generate an image containing a polyp."  # every Kvasir-SEG frame shows a polyp: one constant caption


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in (folder / "images").iterdir() if p.suffix.lower() in (".jpg", ".png"))


def _write_folder(out: Path, frames: list[Path]) -> None:
    img = out / "images"
    img.mkdir(parents=True, exist_ok=True)
    rows = []
    for p in frames:
        link = img / p.name
        if not link.exists():
            os.symlink(p.resolve(), link)
        rows.append({"image": p.name, "caption": CAPTION})
    with open(out / "captions.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["image", "caption"])
        w.writeheader()
        w.writerows(rows)


def prepare(out: Path, data: Path, seed: int = 0) -> None:
    base, extra = _images(data / "kvasir-seg"), _images(data / "kvasir-seg-extra")
    order = list(extra)
    random.Random(seed).shuffle(order)
    extra_train, heldout = sorted(order[:400]), sorted(order[400:])
    _write_folder(out / "train150", base)
    _write_folder(out / "train550", base + extra_train)
    _write_folder(out / "heldout", heldout)
    print(f"{out}: train150 {len(base)}, train550 {len(base) + len(extra_train)}, heldout {len(heldout)} frames")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare", help="write the data folders")
    p.add_argument("out", type=Path)
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.cmd == "prepare":
        prepare(args.out, args.data, args.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
