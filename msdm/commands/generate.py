"""``msdm generate``: images for a prompt list in the MEDVQA-GI challenge layout.

Writes ``prompt{p:04d}_img{i:04d}.png`` (1-based) and ``prompts.json`` (``{"1": prompt, ...}``) into ``--out``.
Every image carries its provenance in PNG text chunks (synthetic, prompt, model + revision, seed, sampler, steps,
guidance, msdm version; :mod:`msdm.provenance`), and ``provenance.json`` lists the SHA-256 of every file written.
Check them with ``msdm provenance OUT``.
"""

NAME = "generate"
HELP = "generate images for a prompt file with a saved MSDM pipeline (challenge layout prompt0001_img0001.png)"


def add_arguments(parser):
    parser.add_argument("--pipeline", required=True, help="MSDM pipeline folder (msdm export / quickstart output)")
    parser.add_argument("--prompts", required=True, help="prompt file: .txt (one per line), .json (list or challenge pairs), .csv")
    parser.add_argument("--num-images", type=int, default=10, help="images per prompt (10 in the challenge)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--seed", type=int, default=0, help="image k uses seed + k (reproducible image by image)")
    parser.add_argument("--sampler", default=None, choices=["ddim", "dpm++", "ddpm", "euler"],
                        help="override the pipeline's sampler (ddim = the reference; dpm++ = fast)")
    parser.add_argument("--steps", type=int, default=None, help="sampling steps (default: 150 for ddim, 20 for dpm++)")
    parser.add_argument("--guidance-scale", type=float, default=4.5,
                        help="diffusers convention uncond + s*(cond-uncond); 4.5 = the reference's 3.5")
    parser.add_argument("--eta", type=float, default=1.0, help="DDIM eta (1.0 = the reference)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available)")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--model-name", default=None,
                        help="model name written into the provenance (default: MSDM + the pipeline folder's name)")


def run(args) -> int:
    import time
    from pathlib import Path

    import torch

    from msdm.generation import generate_images
    from msdm.io import write_json
    from msdm.pipeline import MSDMPipeline, images_to_uint8
    from msdm.prompts import challenge_filename, read_prompts
    from msdm.provenance import folder_revision, make_record, save_png, update_manifest

    prompts = read_prompts(args.prompts)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    pipe = MSDMPipeline.from_pretrained(args.pipeline, torch_dtype=dtype).to(device)
    pipe.set_progress_bar_config(disable=True)
    if args.sampler:
        pipe.set_sampler(args.sampler)
    steps = args.steps or (20 if args.sampler == "dpm++" else 150)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # What reproduces an image besides its prompt and seed: the pipeline's generation_info() (sampler) plus the
    # settings of this run. The revision is a content hash of the pipeline folder (exported models have no hub
    # revision); only the folder's name goes into the images, never the local path.
    info = {
        "model": args.model_name or f"MSDM ({Path(args.pipeline).resolve().name})",
        "revision": folder_revision(args.pipeline) if Path(args.pipeline).is_dir() else str(args.pipeline),
        **pipe.generation_info(),
        "steps": steps,
        "guidance_scale": args.guidance_scale,
        "guidance_convention": "diffusers: uncond + s*(cond - uncond)",
        "eta": args.eta,
        "dtype": args.dtype,
        "resolution": int(pipe.config.resolution),
        "seed_rule": "image k (0-based, prompt-major) uses seed + k",
    }

    t0 = time.perf_counter()
    n = 0
    entries = {}
    for p_idx, i_idx, texts, images in generate_images(
        pipe, prompts, args.num_images, args.seed, args.batch_size,
        guidance_scale=args.guidance_scale, num_inference_steps=steps, eta=args.eta,
    ):
        for p, i, text, arr in zip(p_idx, i_idx, texts, images_to_uint8(images)):
            name = challenge_filename(p + 1, i + 1)
            k = p * args.num_images + i  # the global image index generate_images seeds with seed + k
            record = make_record(text, args.seed + k, info, prompt_index=p + 1, image_index=i + 1)
            entries[name] = save_png(arr, out / name, record)
            n += 1
    write_json(out / "prompts.json", {str(k + 1): s for k, s in enumerate(prompts)})
    entries["prompts.json"] = None  # hashed from the file
    update_manifest(out, entries, generation={**info, "seed": args.seed, "num_images_per_prompt": args.num_images,
                                              "num_prompts": len(prompts), "synthetic": True})
    dt = time.perf_counter() - t0
    print(f"wrote {n} images for {len(prompts)} prompts to {out} in {dt:.1f} s ({n / max(dt, 1e-9):.2f} img/s)")
    return 0
