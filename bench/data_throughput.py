"""Images/s of msdm's data pipeline vs a plain torchvision ``ImageFolder`` with the same transform on the same files.

    python bench/data_throughput.py                      # 256 px Kvasir-SEG JPEGs, workers 0 and 2
    python bench/data_throughput.py --source original --resolution 256 --repeat 40

Both pipelines read the same files (symlinked into a temporary folder) and apply the same
:class:`msdm.data.transforms.SquareTransform` (centre crop + resize + scale to [-1, 1]); the difference is the
abstraction: captions table, per-sample prompt draw, robust loading checks, the epoch-encoding sampler and the dict
batch. Setup (reading the table, the header check of every file) is timed separately and not in images/s.
Epochs of the two pipelines alternate so that a busy machine slows both alike; the rates are medians over epochs and
the ratio is the median of the ratios of adjacent epochs. With
``num_workers=0`` the CPU-time rate (images per CPU second of the process) is printed too: on a shared machine it is
the stable measure of the per-image cost, wall-clock being at the mercy of other jobs.
Goal (issue 4): ratio ≥ 0.9.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def build_folder(root: Path, files: list[Path], repeat: int) -> int:
    (root / "polyp").mkdir(parents=True)
    lines = ["image,caption"]
    n = 0
    for r in range(repeat):
        for f in files:
            name = f"{f.stem}_{r:03d}{f.suffix}"
            os.symlink(f, root / "polyp" / name)
            lines.append(f"polyp/{name},Generate an image containing a polyp.")
            lines.append(f"polyp/{name},Generate an image from a colonoscopy procedure.")
            n += 1
    (root / "captions.csv").write_text("\n".join(lines) + "\n")
    return n


def epoch_rate(loader) -> tuple[float, float]:
    """(images per wall-clock second, images per CPU second of this process). With num_workers=0 all the work is
    in this process, and the CPU-time rate is immune to other jobs on a shared machine."""
    t0, c0, n = time.perf_counter(), time.process_time(), 0
    for batch in loader:
        n += (batch["pixel_values"] if isinstance(batch, dict) else batch[0]).shape[0]
    return n / (time.perf_counter() - t0), n / (time.process_time() - c0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--source", choices=["kvasir-seg", "original"], default="kvasir-seg",
                    help="kvasir-seg: 150 JPEGs at 256x256; original: 5 full-size non-square JPEGs")
    ap.add_argument("--resolution", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=2, help="list every file this many times (more images per epoch)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    ap.add_argument("--epochs", type=int, default=11, help="timed epochs per pipeline (after one warm-up epoch)")
    args = ap.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from torch.utils.data import DataLoader
    from torchvision.datasets import ImageFolder

    from datamodules.image_text import ImageTextDataModule
    from msdm.data.transforms import SquareTransform
    from msdm.testing import shared_data_dir

    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # the setup summary would break the table
    torch.set_num_threads(1)  # both pipelines decode with PIL; keep torch from competing for the 2 cores
    data = shared_data_dir() / ("kvasir-seg" if args.source == "kvasir-seg" else "kvasir-seg-original")
    files = sorted((data / "images").glob("*.jpg"))
    if not files:
        print(f"no images in {data}", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        n = build_folder(root, files, args.repeat)
        print(f"# data throughput: {n} images ({len(files)} files of {data.name} x{args.repeat}), "
              f"resolution {args.resolution}, batch {args.batch_size}, {os.cpu_count()} CPUs, "
              f"{platform.processor() or platform.machine()}, torch {torch.__version__}")
        print(f"{'workers':>7} {'msdm img/s':>11} {'ImageFolder img/s':>18} {'ratio':>6} "
              f"{'msdm img/CPU-s':>15} {'ImageFolder img/CPU-s':>22} {'CPU ratio':>9} {'msdm setup s':>13}")
        for workers in args.workers:
            t0 = time.perf_counter()
            dm = ImageTextDataModule(data=str(root), captions_file="captions.csv", resolution=args.resolution,
                                     batch_size=args.batch_size, num_workers=workers, val_fraction=0.0,
                                     persistent_workers=workers > 0, aspect="crop")
            dm.setup("fit")
            setup_s = time.perf_counter() - t0
            ours = dm.train_dataloader()
            base_ds = ImageFolder(str(root), transform=SquareTransform(args.resolution, "crop"))
            base = DataLoader(base_ds, batch_size=args.batch_size, shuffle=True, num_workers=workers,
                              persistent_workers=workers > 0)
            assert len(base_ds) == len(dm.train_dataset) == n
            epoch_rate(ours), epoch_rate(base)  # warm-up (page cache, worker start)
            r_ours, r_base = [], []
            for _ in range(args.epochs):
                r_ours.append(epoch_rate(ours))
                r_base.append(epoch_rate(base))
            # medians of the rates, and the median of the ratios of adjacent epochs (which share the machine's load)
            mo, mb = (statistics.median(r[0] for r in rs) for rs in (r_ours, r_base))
            ratio = statistics.median(o[0] / b[0] for o, b in zip(r_ours, r_base))
            if workers == 0:
                co, cb = (statistics.median(r[1] for r in rs) for rs in (r_ours, r_base))
                cratio = statistics.median(o[1] / b[1] for o, b in zip(r_ours, r_base))
                cpu = f"{co:>15.0f} {cb:>22.0f} {cratio:>9.2f}"
            else:  # the work is in the worker processes: only wall-clock is meaningful
                cpu = f"{'-':>15} {'-':>22} {'-':>9}"
            print(f"{workers:>7} {mo:>11.0f} {mb:>18.0f} {ratio:>6.2f} {cpu} {setup_s:>13.2f}")
            del ours, base
    return 0


if __name__ == "__main__":
    sys.exit(main())
