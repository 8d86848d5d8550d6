"""Bootstrap cost of ``msdm utility``: vectorised metrics over all replicates vs torchmetrics once per replicate.

The paired bootstrap recomputes accuracy, balanced accuracy, macro-F1 and AUROC of every run on every replicate
(1000 by default). ``msdm.utility.stats.metrics_on_resamples`` does all replicates of a run at once (numpy, rank-based
AUROC); ``msdm.utility.metrics.classification_metrics`` (torchmetrics, the definition of the point estimates; the
two agree on every replicate, tests/test_utility_stats.py) would be called once per replicate and run.

    python bench/utility_bootstrap.py [--runs 36] [--replicates 1000] [--test-images 200] [--classes 2]
"""

import argparse
import time

import numpy as np
import torch

from msdm.utility.metrics import classification_metrics
from msdm.utility.stats import metrics_on_resamples, stratified_bootstrap_indices


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=36, help="runs in the table (e.g. 3 fractions x 3 seeds x 4 arms)")
    ap.add_argument("--replicates", type=int, default=1000)
    ap.add_argument("--test-images", type=int, default=200)
    ap.add_argument("--classes", type=int, default=2)
    ap.add_argument("--sample", type=int, default=100, help="torchmetrics calls timed (extrapolated to all)")
    a = ap.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    target = np.arange(a.test_images) % a.classes
    probs = rng.dirichlet(np.ones(a.classes), a.test_images)
    idx = stratified_bootstrap_indices(target.tolist(), a.replicates, 0)
    metrics_on_resamples(probs, target, idx[:10])  # warm-up
    t0 = time.perf_counter()
    for _ in range(a.runs):
        metrics_on_resamples(probs, target, idx)
    vec = time.perf_counter() - t0
    pt, tt = torch.tensor(probs), torch.tensor(target)
    for b in range(5):  # warm-up
        classification_metrics(pt[idx[b]], tt[idx[b]])
    t0 = time.perf_counter()
    for b in range(a.sample):
        classification_metrics(pt[idx[b]], tt[idx[b]])
    per = (time.perf_counter() - t0) / a.sample
    loop = per * a.runs * a.replicates
    print(f"{a.runs} runs x {a.replicates} replicates, {a.test_images} test images, {a.classes} classes")
    print(f"  vectorised (msdm.utility.stats)     {vec:8.2f} s")
    print(f"  torchmetrics per replicate          {loop:8.2f} s  ({per * 1e3:.2f} ms per call, {a.sample} timed)")
    print(f"  ratio                               {loop / vec:8.1f}x")


if __name__ == "__main__":
    main()
