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
   raw weights, their copy fraction against the run's training frames (:mod:`msdm.metrics.realism.memorization`, threshold
   calibrated on the held-out frames) and FID against the held-out frames.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import sys
import time
from pathlib import Path

import numpy as np

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


# ----------------------------------------------------------------------------------------------------------------
# Scoring checkpoints
# ----------------------------------------------------------------------------------------------------------------


class FrameSet:
    """Inception features (cached on disk, msdm.metrics.realism.cache) and luma thumbnails of a prepared data folder."""

    def __init__(self, folder: Path, extractor, cache_dir: Path, size: int):
        from msdm.metrics.realism.evaluate import RealImageFolder, real_features
        from msdm.metrics.realism.memorization import luma_thumbnails

        self.source = RealImageFolder(folder / "images")
        by_id, _ = real_features(self.source, extractor, cache_dir, batch_size=32)
        self.ids = list(self.source.ids)
        self.features = np.stack([by_id[i] for i in self.ids])
        self.paths = dict(zip(self.ids, self.source.paths))
        self.thumbs = luma_thumbnails(self.source.paths, size)


def _checkpoints(run: Path) -> list[tuple[int, Path]]:
    import re

    found = []
    for p in run.rglob("step=*.ckpt"):
        m = re.search(r"step=(\d+)", p.name)
        found.append((int(m.group(1)), p))
    return sorted(found)


def score(runs: list[Path], out_csv: Path, prep: Path, num_images: int, size: int, alpha: float, every: int,
          gallery_dir: Path | None, steps: list[int] | None = None) -> None:
    import torch
    import yaml

    from lightning_modules import MSDMUNetModule
    from msdm.metrics.realism.cache import default_cache_dir
    from msdm.metrics.realism.features import InceptionExtractor
    from msdm.metrics.realism.figures import realism_figures
    from msdm.metrics.realism.memorization import calibrate, luma_thumbnails, memorization_report
    from msdm.metrics.realism.memorization_io import write_report

    ext = InceptionExtractor()
    cache = default_cache_dir()
    heldout = FrameSet(prep / "heldout", ext, cache, size)
    sets: dict[str, FrameSet] = {}
    done = set()
    if out_csv.exists():
        with open(out_csv) as f:
            done = {(r["run"], int(r["step"]), r["weights"]) for r in csv.DictReader(f)}
    for run in runs:
        name = run.parent.name if run.name.startswith("version_") else run.name  # runs/mem/unet150/version_0
        for step, ckpt in _checkpoints(run):
            if (steps and step not in steps) or (not steps and step % every):
                continue
            module = MSDMUNetModule.load_from_checkpoint(str(ckpt), map_location="cpu")
            cfg = yaml.safe_load((ckpt.parents[1] / "config.yaml").read_text())  # the run's own config
            train_dir = Path(cfg["data"]["init_args"]["data"])
            key = str(train_dir)
            if key not in sets:
                sets[key] = FrameSet(train_dir, ext, cache, size)
            train = sets[key]
            cal = calibrate(train.features, train.thumbs, heldout.features, heldout.thumbs, alpha)
            ema = module.ema
            for weights in ("ema", "raw"):
                if (name, step, weights) in done:
                    continue
                module.ema = ema if weights == "ema" else None
                t0 = time.time()
                images = module.generate(["Generate an image containing a polyp."], num_images, seed=0)
                t_gen = time.time() - t0
                feats = ext.extract(images, 32).numpy()
                thumbs = luma_thumbnails(images, size)
                gen_ids = [f"{name}-{step}-{weights}-{k:03d}" for k in range(len(images))]
                mem = memorization_report(feats, thumbs, train.features, train.thumbs, gen_ids=gen_ids,
                                          train_ids=train.ids, calibration=cal)
                figs = realism_figures(feats, heldout.features, prdc=True)
                row = {"run": name, "step": step, "weights": weights, "n_train": len(train.ids),
                       "n_generated": len(images), "copy_fraction": mem.copy_fraction,
                       "copy_low": mem.interval["low"], "copy_high": mem.interval["high"],
                       "median_ssim": float(np.median([r["ssim"] for r in mem.rows])),
                       "median_feature_distance": float(np.median([r["feature_distance"] for r in mem.rows])),
                       "threshold_ssim": cal.thresholds[1], "threshold_feature_distance": cal.thresholds[0]}
                for k in ("FID", "KID", "precision", "recall"):
                    row[k] = figs[k]["value"]
                    row[f"{k}_low"], row[f"{k}_high"] = figs[k]["interval"]["low"], figs[k]["interval"]["high"]
                row["seconds_generate"] = round(t_gen, 1)
                new = not out_csv.exists()
                with open(out_csv, "a", newline="") as f:
                    w = csv.DictWriter(f, fieldnames=list(row))
                    if new:
                        w.writeheader()
                    w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
                print(" ".join(f"{k}={row[k]:.4g}" if isinstance(row[k], float) else f"{k}={row[k]}"
                               for k in ("run", "step", "weights", "copy_fraction", "FID", "KID", "median_ssim")),
                      flush=True)
                if gallery_dir is not None:
                    by_id = dict(zip(gen_ids, images))
                    write_report(mem, gallery_dir / f"{name}-{step}-{weights}", by_id.__getitem__,
                                 lambda i, t=train: t.paths[i])
            module.ema = ema
            del module
            torch.cuda.empty_cache() if torch.cuda.is_available() else None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare", help="write the data folders")
    p.add_argument("out", type=Path)
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("score", help="copy fraction and FID of every checkpoint of the runs")
    p.add_argument("runs", type=Path, nargs="+", help="logger folders (runs/mem/unet150/version_0 ...)")
    p.add_argument("--prep", type=Path, default=Path("runs/mem"), help="the prepare folder (heldout/)")
    p.add_argument("--out", type=Path, required=True, help="CSV (appended; rows already there are skipped)")
    p.add_argument("--num-images", type=int, default=100)
    p.add_argument("--size", type=int, default=64, help="SSIM thumbnail side")
    p.add_argument("--alpha", type=float, default=0.02)
    p.add_argument("--every", type=int, default=500, help="score checkpoints whose step is a multiple of this")
    p.add_argument("--steps", type=int, nargs="+", default=None, help="score only these steps (overrides --every)")
    p.add_argument("--gallery-dir", type=Path, default=None, help="write each checkpoint's report files here")
    args = ap.parse_args(argv)
    if args.cmd == "prepare":
        prepare(args.out, args.data, args.seed)
    else:
        score(args.runs, args.out, args.prep, args.num_images, args.size, args.alpha, args.every, args.gallery_dir,
              args.steps)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
