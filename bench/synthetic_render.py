"""Rendering speed of the synthetic colonoscopy scenes, one process, one thread.

    python bench/synthetic_render.py [--sizes 64 256] [--n 200]

Prints images/s for (a) sample_attributes + render_scene and (b) an uncached SyntheticGIDataset item (adds the
caption locations, the attribute dict and the tensor conversion). CPU time is printed next to wall time because
on a shared machine wall time also measures the neighbours.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from msdm.synthetic import SyntheticGIDataset, render_scene, sample_attributes  # noqa: E402


def _measure(fn, n: int) -> tuple[float, float]:
    fn(0)  # warm-up: caches of the coordinate grids and masks
    w0, c0 = time.perf_counter(), time.process_time()
    for i in range(1, n + 1):
        fn(i)
    return n / (time.perf_counter() - w0), n / (time.process_time() - c0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--n", type=int, default=200, help="images per measurement (a quarter of it above 128 px)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"{'size':>6} {'what':<28} {'img/s (wall)':>13} {'img/s (CPU)':>12}")
    for size in args.sizes:
        n = args.n if size <= 128 else max(10, args.n // 4)

        def render(i, size=size):
            rng = np.random.default_rng(i)
            render_scene(sample_attributes(rng), size, rng)

        ds = SyntheticGIDataset(num_samples=n + 1, resolution=size, cache=False)
        for what, fn in (("sample + render", render), ("dataset item (uncached)", ds.__getitem__)):
            wall, cpu = _measure(fn, n)
            print(f"{size:>6} {what:<28} {wall:>13.1f} {cpu:>12.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
