"""One-seed U-Net variants on a fixed VAE, scored like ``bench/real_kvasir.py``: how msdm's recipe was chosen.

``bench/real_kvasir.py`` trains both stages per seed and reports mean ± std; a recipe search needs many cheaper
runs. This script reuses one trained VAE checkpoint (e.g. ``OUT/work/msdm-s0/vae.ckpt`` of a ``real_kvasir.py`` run),
trains the U-Net of recipe ``--recipe`` with ``--set KEY=JSON`` overrides of its U-Net settings (``--batch-size`` /
``--steps`` for the budget), and scores the sampling settings like ``real_kvasir.py`` (FID / KID of one image per
held-out frame against the held-out frames, clipped share, REAL_PAIRS paired gaps). One seed: an exploration, not a
measurement — the chosen settings are then measured over 3 seeds by ``real_kvasir.py`` (docs/benchmarks.md).

    python bench/real_kvasir_variants.py --vae runs/real_kvasir/work/msdm-s0/vae.ckpt --name sd_schedule \\
        --set 'scheduler_overrides={"beta_start": 0.00085, "beta_end": 0.012}'
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import real_kvasir as rk  # noqa: E402  (this folder's bench, same data, split and scoring)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--vae", required=True, help="a trained VAE checkpoint (the recipe's latent channels)")
    ap.add_argument("--name", required=True)
    ap.add_argument("--recipe", default="msdm")
    ap.add_argument("--batch-size", type=int, default=None, help="default: the recipe's")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=JSON", help="a U-Net setting of the recipe")
    ap.add_argument("--sampling", action="append", default=[], metavar="JSON",
                    help='extra sampling settings to score, e.g. \'{"name": "g3", "guidance_scale": 3}\'')
    ap.add_argument("--adherence-images", type=int, default=16)
    ap.add_argument("--data", nargs="+", default=[str(rk.SHARED / "kvasir-seg"), str(rk.SHARED / "kvasir-seg-extra")])
    ap.add_argument("--labels", default=str(rk.ROOT / "msdm" / "assets" / "kvasir_seg_overlay_labels.csv"))
    ap.add_argument("--out", default="runs/real_kvasir_variants")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from msdm.io import write_json
    from msdm.metrics.adherence.real_detector import RealFrameDetector
    from msdm.training.recipes import get_recipe

    recipe = get_recipe(args.recipe)
    if args.batch_size:
        recipe["batch_size"] = args.batch_size
    for item in args.set:
        key, value = item.split("=", 1)
        recipe["unet"][key] = json.loads(value)
    data = rk.Data(args.data, args.labels, 200, 64)
    detector = RealFrameDetector()
    root = Path(args.out) / args.name
    unet, train_s = rk.train_unet(data, recipe, Path(args.vae), args.seed, args.steps, root)
    print(f"{args.name}: {args.steps} steps at batch {recipe['batch_size']} in {train_s:.0f} s", flush=True)
    result = {"name": args.name, "command": " ".join(["python", "bench/real_kvasir_variants.py", *(argv or sys.argv[1:])]),
              "recipe": recipe, "steps": args.steps, "seed": args.seed, "train_s": train_s, "sampling": []}
    for setting in [{"name": "recipe default"}] + [json.loads(s) for s in args.sampling]:
        r = rk.score_sampling(data, unet, detector, setting, args.adherence_images)
        r.pop("images")
        gaps = {k: v["gap"] for k, v in r.get("paired", {}).items() if k != "mean_gap"}
        print(f"  [{setting['name']}] FID {r['fid']:.1f}  KID {r['kid']:.4f}  clipped255 {r['clipped_255']:.4f}  gaps "
              + " ".join(f"{k} {g:+.2f}" for k, g in gaps.items()), flush=True)
        result["sampling"].append(r)
    write_json(root.with_suffix(".json"), result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
