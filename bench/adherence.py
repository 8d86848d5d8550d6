"""Prompt adherence of a trained MSDM pipeline on the synthetic scenes (issue 10's yardstick).

    python bench/adherence.py --pipeline runs/qs_base/pipeline [--sampler dpm++sde --steps 20 --guidance 10
                              --num-images 24 --seed 0]
    python bench/adherence.py --renders          # the ceiling: perfect renders of each prompt's facts

Prints (1) the paired table: for box, text, instrument and polyp, the detection rate under the prompt and under its
negation with the same seeds, the gap and the mean gap (:func:`msdm.metrics.adherence.paired_adherence`), and
(2) per-attribute accuracy on single prompts (:class:`msdm.metrics.adherence.AdherenceMetric` over
``DEFAULT_PROMPTS``), and writes both to a JSON file. All images come from one batched generation pass with one
loaded pipeline; the pair prompts' images serve both tables.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402


def _stored(generate_fn, path: Path, config: dict):
    """Wrap ``generate_fn``: images come from ``path`` when it holds the same prompts, seeds and settings."""
    import json

    import numpy as np

    def generate(prompts: list[str], seeds: list[int]) -> torch.Tensor:
        key = json.dumps({"prompts": list(prompts), "seeds": [int(s) for s in seeds], "config": config},
                         sort_keys=True)
        if path.is_file():
            data = np.load(path)
            if str(data["key"]) == key:
                print(f"images: reusing {path}")
                return torch.from_numpy(data["images"]).permute(0, 3, 1, 2).float() / 255
        images = generate_fn(prompts, seeds)
        pixels = (images.clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255 + 0.5).astype(np.uint8)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, images=pixels, key=np.array(key))
        # score what was stored (8-bit, as a saved PNG would be), so a rerun on the file gives the same figures
        return torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255

    return generate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--pipeline", help="MSDM pipeline folder (msdm quickstart / msdm export output)")
    src.add_argument("--renders", action="store_true", help="score perfect renders of each prompt (the ceiling)")
    parser.add_argument("--sampler", default="dpm++sde", help="sampler (default dpm++sde)")
    parser.add_argument("--steps", type=int, default=20, help="sampling steps (default 20)")
    parser.add_argument("--guidance", type=float, default=None,
                        help="guidance scale, diffusers convention uncond + s*(cond - uncond) (default: the pipeline "
                             "folder's config.guidance_scale, what its run sampled with)")
    parser.add_argument("--eta", type=float, default=1.0, help="DDIM eta (default 1.0)")
    parser.add_argument("--num-images", type=int, default=24, help="images per prompt (same seeds for every prompt)")
    parser.add_argument("--seed", type=int, default=0, help="image i of every prompt uses seed + i")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--resolution", type=int, default=64, help="--renders only: image side")
    parser.add_argument("--device", default=None, help="cpu / cuda (default: cuda if available)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--images", default=None,
                        help=".npz file keeping the generated images (uint8): reused when its prompts, seeds and "
                             "settings match (re-score with another detector without generating again), else written")
    parser.add_argument("--out", default=None,
                        help="JSON path (default: next to the pipeline folder, adherence_<sampler>_<steps>_g<guidance>"
                             ".json; ./adherence_renders.json with --renders)")
    args = parser.parse_args(argv)

    from msdm.generators import MSDMGenerator
    from msdm.io import write_json
    from msdm.metrics.adherence import (
        DEFAULT_PAIRS,
        DEFAULT_PROMPTS,
        SceneDetector,
        adherence_report,
        format_accuracy,
        format_paired,
    )

    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    t0 = time.perf_counter()
    if args.renders:
        from msdm.synthetic.prompt_scenes import renders_generate_fn

        generate_fn = renders_generate_fn(args.resolution)
        config = {"source": "renders", "resolution": args.resolution}
        out = Path(args.out or "adherence_renders.json")
    else:
        from msdm.pipeline import MSDMPipeline

        pipe = MSDMPipeline.from_pretrained(args.pipeline).to(device)
        pipe.set_progress_bar_config(disable=True)
        pipe.set_sampler(args.sampler)
        if args.guidance is None:
            args.guidance = float(pipe.config.guidance_scale)
        generate_fn = MSDMGenerator(pipe, steps=args.steps, guidance_scale=args.guidance, eta=args.eta,
                                    batch_size=args.batch_size).generate
        config = {"source": str(Path(args.pipeline).resolve()), "sampler": args.sampler, "steps": args.steps,
                  "guidance_scale": args.guidance, "guidance_convention": "diffusers: uncond + s*(cond - uncond)",
                  "eta": args.eta, "resolution": int(pipe.config.resolution)}
        pipeline_dir = Path(args.pipeline).resolve()
        out = Path(args.out or pipeline_dir.parent / f"adherence_{args.sampler}_{args.steps}_g{args.guidance:g}.json")
    if args.images:
        generate_fn = _stored(generate_fn, Path(args.images), config)
    detector = SceneDetector(device="cpu")
    load_s = time.perf_counter() - t0

    t1 = time.perf_counter()
    report = adherence_report(generate_fn, DEFAULT_PAIRS, DEFAULT_PROMPTS, args.num_images, args.seed, detector)
    seconds = time.perf_counter() - t1
    n_images = args.num_images * len(dict.fromkeys([*(p for pair in DEFAULT_PAIRS.values() for p in pair),
                                                    *DEFAULT_PROMPTS]))
    config.update(num_images=args.num_images, seed=args.seed, images_generated=n_images, device=device,
                  seconds=round(seconds, 1), load_seconds=round(load_s, 1))

    print(f"source: {config['source']}" + ("" if args.renders else
          f"  ({args.sampler}, {args.steps} steps, guidance {args.guidance:g})"))
    print(f"{n_images} images ({args.num_images} per prompt, seeds {args.seed}..{args.seed + args.num_images - 1}) "
          f"in {seconds:.1f} s\n")
    print("paired adherence (same seeds under a prompt and its negation)")
    print(format_paired(report["paired"]))
    print("\nper-attribute accuracy (AdherenceMetric on single prompts)")
    print(format_accuracy(report["accuracy"], report["counts"]))
    write_json(out, {"config": config, "pairs": DEFAULT_PAIRS, "prompts": list(DEFAULT_PROMPTS), **report})
    print(f"\nwritten: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
