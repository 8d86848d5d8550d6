"""Challenge metrics: the reference formulas (scipy ``sqrtm`` per prompt pair, as ``submission_task2.py``) vs ours.

    python bench/metrics_speed.py                       # 500 prompts x 10 images, 768-d; reference on 10 pairs
    python bench/metrics_speed.py --reference-pairs all # the full reference loop (~25 min on 2 cores)

Synthetic BiomedCLIP-like features (no model): 250 (original, rephrased) pairs of 10 images, a pool of real images
and 5–30 real images mapped to each pair. The reference loop is the script's, line for line (sklearn ``normalize`` /
``cosine_similarity``, ``pdist``, ``np.cov`` + ``scipy.linalg.sqrtm``), including its ``FID(A,B)`` column; ours is
:func:`msdm.metrics.realism.challenge.challenge_scores` (which computes that column too). Both run on the **same** pairs,
so the measured ratio compares equal work; the full-size reference time is extrapolated from it unless
``--reference-pairs all``. Prints both results, their largest relative difference and the ratio.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np


def make_features(num_prompts, per_prompt, dim, real_pool, real_min, real_max, seed=0):
    rng = np.random.default_rng(seed)
    scales = rng.uniform(0.2, 1.0, dim)  # anisotropic, like real embeddings
    base = rng.normal(size=dim) * 2
    centres = base + rng.normal(size=(num_prompts // 2, dim)) * 0.8
    gen = {p: (centres[(p - 1) // 2] + 0.3 * rng.normal(size=dim) + rng.normal(size=(per_prompt, dim)) * scales)
           .astype(np.float32) for p in range(1, num_prompts + 1)}
    real = {f"real{j:05d}": (base + rng.normal(size=dim) * scales * 1.3).astype(np.float32) for j in range(real_pool)}
    ids = sorted(real)
    mapping = {}
    for p in range(1, num_prompts + 1, 2):
        chosen = [str(i) for i in rng.choice(ids, size=int(rng.integers(real_min, real_max + 1)), replace=False)]
        mapping[str(p)] = mapping[str(p + 1)] = chosen
    return gen, real, mapping


def reference_scores(all_features, real_features_cache, prompt_to_real, num_pairs):
    """``submission_task2.py``'s scoring loop (its half-loop fixed to cover every pair), on the first pairs."""
    from tests.challenge_reference import reference_scores as script

    return script(all_features, real_features_cache, prompt_to_real, half=False, num_pairs=num_pairs)[0]


def ours(gen, real, mapping, num_pairs):
    from msdm.metrics.realism.challenge import challenge_pairs, challenge_scores, real_features_by_prompt

    pairs = challenge_pairs(gen)[:num_pairs]
    real_pp = real_features_by_prompt(real, mapping, [a for a, _ in pairs])
    s = challenge_scores(gen, real_pp, pairs=pairs)
    return {k: s[k] for k in ("fidelity", "agreement", "diversity", "FBD")}


def timed(fn, *args):
    t = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t


def fmt(scores):
    return "  ".join(f"{k}={v:.10g}" for k, v in scores.items())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prompts", type=int, default=500)
    ap.add_argument("--images", type=int, default=10, help="images per prompt")
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--real-pool", type=int, default=1000, help="distinct real images")
    ap.add_argument("--real-min", type=int, default=5)
    ap.add_argument("--real-max", type=int, default=30)
    ap.add_argument("--reference-pairs", default="10", help="pairs the slow reference runs on, or 'all'")
    args = ap.parse_args()

    gen, real, mapping = make_features(args.prompts, args.images, args.dim, args.real_pool, args.real_min,
                                       args.real_max)
    total = args.prompts // 2
    k = total if args.reference_pairs == "all" else min(int(args.reference_pairs), total)
    print(f"metrics bench: {args.prompts} prompts x {args.images} images, d={args.dim}, {total} pairs, "
          f"{args.real_min}-{args.real_max} real images per pair (pool {args.real_pool}); "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")

    ours(gen, real, mapping, 2)  # warm-up (imports, BLAS)
    ref, t_ref = timed(reference_scores, gen, real, mapping, k)
    mine, t_mine = timed(ours, gen, real, mapping, k)
    rel = max(abs(mine[key] - ref[key]) / abs(ref[key]) for key in ref)
    print(f"reference, {k} pairs (scipy sqrtm per pair): {t_ref:9.2f} s   {fmt(ref)}")
    print(f"ours,      {k} pairs:                         {t_mine:9.3f} s   {fmt(mine)}")
    print(f"max relative difference: {rel:.2e}   speed-up on the same {k} pairs: {t_ref / t_mine:,.0f}x")
    if k < total:
        full, t_full = timed(ours, gen, real, mapping, total)
        # reference per-pair cost (3 sqrtm) scales with the pairs; its global FBD is one more sqrtm either way
        t_ref_full = t_ref * (3 * total + 1) / (3 * k + 1)
        print(f"ours,      all {total} pairs:                  {t_full:9.3f} s   {fmt(full)}")
        print(f"reference, all {total} pairs (extrapolated):   {t_ref_full:9.0f} s   "
              f"-> speed-up ~{t_ref_full / t_full:,.0f}x")


if __name__ == "__main__":
    main()
