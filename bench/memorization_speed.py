"""Speed of the memorization report (msdm.metrics.realism.memorization) on 1 000 generated vs ~700 training frames, and the
ratio to a brute-force reference that computes SSIM against every training frame and flip.

Training frames: the 698 real Kvasir-SEG frames (../shared/data/kvasir-seg + kvasir-seg-extra). "Generated": 1 000
disguised copies (msdm.metrics.realism.disguised_copies: flip, crop, colour jitter, JPEG) of random training frames — the
case where every pixel comparison matters. Features: the frames' Inception features (computed once, cached by
msdm.metrics.realism.cache like `msdm evaluate` caches a training set's); a copy's feature is its source frame's plus
Gaussian noise of the size the 150 disguised copies of tests/test_metrics_memorization.py show (so that the feature
shortlist points where Inception would). Inception extraction of the generated images is not timed: `msdm evaluate`
computes those features for FID anyway (figures for it: docs/benchmarks.md, Metrics).

The brute-force reference is the same pixel matcher with every training frame and flip as candidates (plain SSIM
against all 4 × 698 flips, then the same crop alignment of the best ones): timed on ``--brute`` generated images and
scaled linearly to ``--num-generated``. On those images the script prints how often the shortlist finds the
brute-force best SSIM and how often the copy verdicts agree (the same calibrated thresholds; the feature view is
already exhaustive). ``--num-generated`` / ``--num-train`` shrink the run (a smoke check:
``--num-generated 50 --num-train 40 --brute 10 --features pixels``).

``--features pixels`` replaces the Inception features by 16 × 16 RGB thumbnails (no Inception pass over the 698
frames: for a busy machine); the report's cost barely depends on the feature width (one matrix product).
Wall and CPU seconds are both printed: on a shared machine the wall time of a niced process is inflated.

    HF_HUB_OFFLINE=1 nice -n 10 python bench/memorization_speed.py [--threads 2] [--features pixels]
        [--num-generated 1000] [--num-train 698] [--brute 40]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--num-generated", "--n-generated", type=int, default=1000)
    ap.add_argument("--num-train", "--n-train", type=int, default=None,
                    help="use the first N of the 698 training frames (default: all)")
    ap.add_argument("--brute", type=int, default=40, help="generated images the brute-force reference runs on")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--features", choices=["inception", "pixels"], default="inception")
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from msdm.metrics.realism.cache import default_cache_dir
    from msdm.metrics.realism.disguised_copies import disguise
    from msdm.metrics.realism.evaluate import RealImageFolder, real_features
    from msdm.metrics.realism.features import InceptionExtractor, load_image
    from msdm.metrics.realism.memorization import FLIPS, luma_thumbnails, memorization_report, pixel_neighbours
    from msdm.metrics.realism.memorization_io import write_report

    folders = [RealImageFolder(args.data / name / "images") for name in ("kvasir-seg", "kvasir-seg-extra")]
    feats, paths = [], []
    ext = InceptionExtractor() if args.features == "inception" else None
    for src in folders:
        if ext is not None:
            by_id, hit = real_features(src, ext, default_cache_dir(), 32, desc=f"inception {src.folder.parent.name}")
            feats.append(np.stack([by_id[i] for i in src.ids]))
        else:
            from PIL import Image

            feats.append(np.stack([np.asarray(load_image(p).resize((16, 16), Image.BILINEAR), np.float64).ravel()
                                   for p in src.paths]))
        paths += list(src.paths)
    train_f = np.concatenate(feats)
    if args.num_train is not None:
        if args.num_train < 3:
            sys.exit("--num-train must be at least 3")
        train_f, paths = train_f[:args.num_train], paths[:args.num_train]
    nt = len(paths)
    rng = np.random.default_rng(0)
    src_idx = rng.integers(0, nt, args.num_generated)
    print(f"training frames: {nt}; generated (disguised copies): {args.num_generated}; SSIM at {args.size} px; "
          f"torch threads {args.threads}")

    t0 = time.perf_counter()
    frames = [load_image(p) for p in paths]
    gen_images = [disguise(frames[i], np.random.default_rng([k, 7])) for k, i in enumerate(src_idx)]
    t_make = time.perf_counter() - t0
    # copy features: the source frame's + noise at the scale measured on real disguised copies (cosine distance
    # ~0.02-0.1 to the source, docs/benchmarks.md)
    scale = np.linalg.norm(train_f, axis=1).mean() * 0.2 / np.sqrt(train_f.shape[1])
    gen_f = train_f[src_idx] + rng.normal(size=(args.num_generated, train_f.shape[1])) * scale

    t0, c0 = time.perf_counter(), time.process_time()
    train_t = luma_thumbnails(frames, args.size)
    gen_t = luma_thumbnails(gen_images, args.size)
    t_thumbs = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = memorization_report(gen_f, gen_t, train_f, train_t, gen_ids=[str(k) for k in range(len(gen_t))],
                                 train_ids=[p.name for p in paths])
    t_report = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = ROOT / "bench_out" / "memorization_speed"
    by_name = {p.name: f for p, f in zip(paths, frames)}
    write_report(result, out, lambda k: gen_images[int(k)], by_name.__getitem__)
    t_write = time.perf_counter() - t0
    total = t_thumbs + t_report + t_write
    cpu_total = time.process_time() - c0
    print(f"thumbnails (decode + resize {nt + len(gen_t)} images): {t_thumbs:.1f} s; matching + calibration "
          f"(leave-one-out) + bootstrap: {t_report:.1f} s; CSV + gallery: {t_write:.1f} s; total {total:.1f} s "
          f"(making the disguised copies, not part of a report: {t_make:.1f} s); CPU time of the report {cpu_total:.1f} s "
          f"({args.features} features)")
    print(f"flagged: {result.copy_fraction:.3f} [{result.interval['low']:.3f}, {result.interval['high']:.3f}] "
          f"(every generated image is a disguised copy)")

    print(f"goal: a report on 1 000 generated vs ~700 training frames in <= 120 s on 2 cores: "
          f"{total:.1f} s here for {len(gen_t)} vs {nt}")

    # brute force: the same pixel matcher with every training frame and flip as a candidate
    b = min(args.brute, len(gen_t))
    every = np.tile(np.arange(nt), (1, 1))
    t0, c0 = time.perf_counter(), time.process_time()
    brute = [pixel_neighbours(gen_t[k:k + 1], train_t, every, shortlist=0) for k in range(b)]
    t_brute = (time.perf_counter() - t0) / b * len(gen_t)
    cpu_brute = (time.process_time() - c0) / b * len(gen_t)
    _, t_s = result.calibration.thresholds
    same = np.mean([abs(result.rows[k]["ssim"] - float(brute[k][2][0])) < 1e-6 for k in range(b)])
    verdicts = np.mean([result.rows[k]["copy"] == (result.rows[k]["copy_by_features"] or float(brute[k][2][0]) > t_s)
                        for k in range(b)])
    right = np.mean([result.rows[k]["nearest_train_pixels"] == paths[src_idx[k]].name for k in range(b)])
    print(f"brute force (SSIM against all {4 * nt} training flips + the same crop alignment): {t_brute:.1f} s for "
          f"{len(gen_t)} images (timed on {b}, CPU {cpu_brute:.1f} s); report (matching + calibration + bootstrap) / "
          f"brute-force matching = "
          f"{t_report / t_brute:.4f} of wall times ({t_brute / t_report:.1f}x faster; "
          f"{cpu_total / cpu_brute:.4f} of CPU times incl. thumbnails and calibration)")
    print(f"agreement with brute force on {b} images: best SSIM equal on {same:.0%}, copy verdicts equal on "
          f"{verdicts:.0%}; nearest frame = the copied frame on {right:.0%} (flips {FLIPS})")


if __name__ == "__main__":
    main()
