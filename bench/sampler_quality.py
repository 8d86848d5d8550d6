"""Fast sampling: DPM-Solver++ at few steps vs the reference DDIM-150 (η = 1) on a trained MSDM pipeline.

    python bench/sampler_quality.py --pipeline msdm_quickstart/pipeline [--n-per-prompt 64] [--dpm-steps 10 20 30]

For each sampler it counts the U-Net evaluations per image and measures a distribution distance between its images
and a reference DDIM-150 run (seed set A). The yardstick is DDIM-150's own run-to-run noise: the distance between
DDIM-150 runs with other seeds (B, C) and run A. A fast sampler "matches DDIM-150" when its distance to A, made with
the same seeds as the noise runs, lies within that noise band.

Distance: Fréchet distance between Gaussians fitted to two feature sets (the FID formula), on two cheap feature
maps that need no downloaded weights: (1) a small convolutional net with fixed random weights (seed 1234, 128-d
global-average-pooled ReLU features; random conv features track low-level image statistics) and (2) the images
average-pooled to 8×8 pixels (192-d). This is not FID (no Inception, few images) and its values are only comparable
within one run of this script.

Every run's images are kept in ``--out`` (uint8 .npz) and reused when the script is rerun with the same settings.
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

PROMPTS = [
    "Generate an image containing a polyp.",
    "Generate an image with no polyps.",
    "Generate an image containing a green/black box artefact.",
    "Generate an image containing text.",
]
SEEDS = {"A": 0, "B": 100_000, "C": 200_000}


# ------------------------------------------------------------------------------------------------ Fréchet distance
def frechet_distance(f1: np.ndarray, f2: np.ndarray) -> float:
    """‖μ1 − μ2‖² + tr Σ1 + tr Σ2 − 2 tr √(Σ1 Σ2), in float64; tr √(Σ1Σ2) via the symmetric √Σ1 Σ2 √Σ1."""
    f1, f2 = f1.astype(np.float64), f2.astype(np.float64)
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    w, v = np.linalg.eigh(s1)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    m = root1 @ s2 @ root1
    tr_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt)


def feature_net() -> torch.nn.Module:
    g = torch.Generator().manual_seed(1234)
    layers, c = [], 3
    for out in (32, 64, 128):
        conv = torch.nn.Conv2d(c, out, 3, stride=2, padding=1)
        torch.nn.init.kaiming_normal_(conv.weight, generator=g)
        torch.nn.init.zeros_(conv.bias)
        layers += [conv, torch.nn.ReLU()]
        c = out
    return torch.nn.Sequential(*layers, torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()).eval()


@torch.no_grad()
def features(images_u8: np.ndarray, net: torch.nn.Module) -> dict[str, np.ndarray]:
    x = torch.from_numpy(images_u8).permute(0, 3, 1, 2).float() / 127.5 - 1
    conv = torch.cat([net(x[i:i + 128]) for i in range(0, len(x), 128)])
    pix = torch.nn.functional.adaptive_avg_pool2d(x, 8).flatten(1)
    return {"conv": conv.numpy(), "pixels8": pix.numpy()}


# ------------------------------------------------------------------------------------------------ sampling
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


def run_sampler(pipe, counter, sampler, steps, seed, prompts, n_per_prompt, batch_size, guidance, out: Path):
    from msdm.generation import generate_images
    from msdm.pipeline import images_to_uint8

    eta = 0.0 if sampler == "ddim0" else 1.0
    name = f"{sampler}{steps}-seed{seed}-n{n_per_prompt}-g{guidance}"
    path = out / f"{name}.npz"
    if path.exists():
        d = np.load(path)
        return d["images"], json.loads(str(d["info"]))
    pipe.set_sampler("ddim" if sampler == "ddim0" else sampler)
    counter.calls = counter.rows = 0
    t0, c0 = time.perf_counter(), time.process_time()
    chunks = []
    for *_, imgs in generate_images(pipe, prompts, n_per_prompt, seed, batch_size, guidance_scale=guidance,
                                    num_inference_steps=steps, eta=eta):
        chunks.append(images_to_uint8(imgs))
    images = np.concatenate(chunks)
    info = {"sampler": sampler, "steps": steps, "seed": seed, "unet_calls": counter.calls,
            "unet_rows_per_image": counter.rows / len(images), "wall_s": time.perf_counter() - t0,
            "cpu_s": time.process_time() - c0, "n": len(images)}
    out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, images=images, info=json.dumps(info))
    return images, info


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pipeline", required=True, help="trained MSDM pipeline folder (msdm quickstart --out DIR → DIR/pipeline)")
    ap.add_argument("--n-per-prompt", type=int, default=64, help="images per prompt per run (4 prompts)")
    ap.add_argument("--samplers", nargs="+", default=["dpm++sde:10,15,20,30", "dpm++:10,20,30", "ddim:20,50"],
                    help="SAMPLER:STEPS,... compared with DDIM-150 (dpm++sde = SDE-DPM-Solver++ 2M, stochastic like "
                         "DDIM η=1; dpm++ = DPM-Solver++ 2M, deterministic; ddim = η 1; ddim0 = DDIM η 0)")
    ap.add_argument("--guidance-scale", type=float, default=4.5, help="diffusers convention; 4.5 = the reference's 3.5")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")))
    ap.add_argument("--out", default="bench_out/sampler_quality", help="image store (reused on rerun)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from msdm.pipeline import MSDMPipeline

    pipe = MSDMPipeline.from_pretrained(args.pipeline)
    pipe.set_progress_bar_config(disable=True)
    counter = CallCounter(pipe.unet)
    out = Path(args.out)
    kw = dict(prompts=PROMPTS, n_per_prompt=args.n_per_prompt, batch_size=args.batch_size,
              guidance=args.guidance_scale, out=out)
    net = feature_net()
    runs = {}
    for s in ("A", "B", "C"):
        runs[f"ddim150/{s}"] = run_sampler(pipe, counter, "ddim", 150, SEEDS[s], **kw)
        print(f"  done ddim150/{s}: {runs[f'ddim150/{s}'][1]}", flush=True)
    names = ["ddim150"]
    for spec in args.samplers:
        sampler, steps = spec.split(":")
        for st in (int(x) for x in steps.split(",")):
            names.append(f"{sampler}{st}")
            for s in ("B", "C"):
                runs[f"{sampler}{st}/{s}"] = run_sampler(pipe, counter, sampler, st, SEEDS[s], **kw)
            print(f"  done {sampler}{st}", flush=True)

    feats = {k: features(imgs, net) for k, (imgs, _) in runs.items()}
    ref = feats["ddim150/A"]
    noise = {k: [frechet_distance(feats[f"ddim150/{s}"][k], ref[k]) for s in ("B", "C")] for k in ref}
    noise_bc = {k: frechet_distance(feats["ddim150/B"][k], feats["ddim150/C"][k]) for k in ref}
    n = runs["ddim150/A"][1]["n"]
    ref_rows = runs["ddim150/A"][1]["unet_rows_per_image"]
    print(f"\nsampler quality: {n} images per run ({len(PROMPTS)} prompts × {args.n_per_prompt}), guidance "
          f"{args.guidance_scale}, pipeline {args.pipeline}, torch threads {args.threads}")
    print("Fréchet distance to DDIM-150 run A (seeds A); noise band = DDIM-150 runs B and C vs A")
    hdr = f"{'sampler':<12} {'U-Net evals/img':>15} {'fewer calls':>11} {'FD conv (B, C)':>18} {'FD pix8 (B, C)':>18} {'within noise':>12} {'CPU s/img':>9}"
    print(hdr)
    print("-" * len(hdr))
    band = {k: max(noise[k]) for k in ref}
    summary = {}
    for name in names:
        info = runs[f"{name}/B"][1]
        fd = {k: [frechet_distance(feats[f"{name}/{s}"][k], ref[k]) for s in ("B", "C")] for k in ref}
        within = all(max(fd[k]) <= band[k] for k in ref)
        ratio = ref_rows / info["unet_rows_per_image"]
        cpu = (runs[f"{name}/B"][1]["cpu_s"] + runs[f"{name}/C"][1]["cpu_s"]) / (2 * n)
        summary[name] = {"evals": info["unet_rows_per_image"], "ratio": ratio, "fd": fd, "within": within}
        print(f"{name:<12} {info['unet_rows_per_image']:>15.0f} {ratio:>10.1f}× "
              f"{fd['conv'][0]:>8.3f}, {fd['conv'][1]:<8.3f} {fd['pixels8'][0]:>8.4f}, {fd['pixels8'][1]:<8.4f} "
              f"{('yes' if within else 'no'):>12} {cpu:>9.2f}")
    print(f"noise band (max of DDIM-150 B/C vs A): conv {band['conv']:.3f}, pix8 {band['pixels8']:.4f}; "
          f"DDIM-150 B vs C: conv {noise_bc['conv']:.3f}, pix8 {noise_bc['pixels8']:.4f}")
    ok = [k for k in names[1:] if summary[k]["within"]]
    if ok:
        best = max(ok, key=lambda k: summary[k]["ratio"])
        print(f"fewest U-Net evaluations within the DDIM-150 noise: {best} → {summary[best]['ratio']:.1f}× fewer "
              f"(goal ≥ 7×)")
    else:
        print("no sampler setting tested lies within the DDIM-150 noise band")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
