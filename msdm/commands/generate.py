"""``msdm generate``: images for a prompt list in the MEDVQA-GI challenge layout.

Writes ``prompt{p:04d}_img{i:04d}.png`` (1-based) and ``prompts.json`` (``{"1": prompt, ...}``) into ``--out``.
Every image carries its provenance in PNG text chunks (synthetic, prompt, model + revision, seed, sampler, steps,
guidance, msdm version; :mod:`msdm.provenance`), and ``provenance.json`` lists the SHA-256 of every file written.
Check them with ``msdm provenance OUT``.

Sharded over ranks for evaluation runs (docs/scaling.md): image ``k`` (global, prompt-major) goes to rank
``k % world_size`` and is drawn from its own seed ``seed + k``, so the union of the ranks' files is exactly what one
process writes. Under ``torchrun`` (or ``srun`` with ``MASTER_ADDR``/``MASTER_PORT`` set) every rank takes its share
and GPU ``LOCAL_RANK``. Independent processes (a SLURM array, machines without a rendezvous) pass ``--rank R
--world-size W``. Either way each rank records its files in a hidden ``.provenance-rRofW.json``, and
``prompts.json`` + ``provenance.json`` are written once every share is done: by rank 0 after a barrier, or, without
a process group, by whichever rank finishes last (it finds every share's record).
"""

NAME = "generate"
HELP = "generate images for a prompt file with a saved MSDM pipeline (challenge layout prompt0001_img0001.png)"

SAMPLER_CHOICES = ["ddim", "dpm++", "dpm++sde", "ddpm", "euler"]


def add_arguments(parser):
    parser.add_argument("--pipeline", required=True, help="MSDM pipeline folder (msdm export / quickstart output)")
    parser.add_argument("--prompts", required=True, help="prompt file: .txt (one per line), .json (list or challenge pairs), .csv")
    parser.add_argument("--num-images", type=int, default=10, help="images per prompt (10 in the challenge)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--seed", type=int, default=0, help="image k uses seed + k (reproducible image by image)")
    parser.add_argument("--sampler", default=None, choices=SAMPLER_CHOICES,
                        help="override the pipeline's sampler (ddim = the reference; dpm++sde = fast, closest to it)")
    parser.add_argument("--steps", type=int, default=None,
                        help="sampling steps (default: 150 for ddim, 20 for dpm++ / dpm++sde — the sampler given, "
                             "else the pipeline's)")
    parser.add_argument("--guidance-scale", type=float, default=None,
                        help="diffusers convention uncond + s*(cond-uncond); default: the pipeline folder's "
                             "config.guidance_scale (what its run sampled with; 4.5 = the reference's 3.5 for older "
                             "folders)")
    parser.add_argument("--eta", type=float, default=1.0, help="DDIM eta (1.0 = the reference)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda:LOCAL_RANK if available)")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--model-name", default=None,
                        help="model name written into the provenance (default: MSDM + the pipeline folder's name)")
    parser.add_argument("--rank", type=int, default=None, help="this process's share (default: RANK / SLURM_PROCID, else 0)")
    parser.add_argument("--world-size", type=int, default=None,
                        help="number of shares (default: WORLD_SIZE / SLURM_NTASKS, else 1)")


def run(args) -> int:
    import os
    import time
    from pathlib import Path

    import torch

    from msdm.diffusion import sampler_name
    from msdm.errors import InputError
    from msdm.generation import env_rank_world, finish_sharded_output, generate_images, shard, shard_record_path
    from msdm.io import write_json
    from msdm.pipeline import MSDMPipeline, images_to_uint8
    from msdm.progress import progress_bar
    from msdm.prompts import challenge_filename, read_prompts
    from msdm.provenance import folder_revision, make_record, save_png

    prompts = read_prompts(args.prompts)
    env_rank, env_world, local_rank = env_rank_world()
    rank = env_rank if args.rank is None else args.rank
    world = env_world if args.world_size is None else args.world_size
    if not 0 <= rank < world:
        raise InputError(f"--rank {rank} is not in [0, --world-size {world})")
    # a rendezvous exists (torchrun sets these): use it for one barrier before the folder-level files
    group = world > 1 and args.rank is None and "MASTER_ADDR" in os.environ and "MASTER_PORT" in os.environ
    if group and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    device = args.device or (f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    pipe = MSDMPipeline.from_pretrained(args.pipeline, dtype=dtype).to(device)
    pipe.set_progress_bar_config(disable=True)  # one bar over the images below, not one per batch of steps
    if args.sampler:
        pipe.set_sampler(args.sampler)
    # the default steps follow the sampler that runs: the one asked for, else the one saved in the pipeline
    steps = args.steps or (20 if sampler_name(pipe.scheduler) in ("dpm++", "dpm++sde") else 150)
    if args.guidance_scale is None:
        args.guidance_scale = float(pipe.config.guidance_scale)  # 4.5 for folders saved before the option
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
    generation = {**info, "seed": args.seed, "num_images_per_prompt": args.num_images, "num_prompts": len(prompts),
                  "synthetic": True}

    t0 = time.perf_counter()
    n = 0
    entries = {}
    share = len(shard(range(len(prompts) * args.num_images), rank, world))
    bar = progress_bar(total=share, desc=f"generate{f' (rank {rank}/{world})' if world > 1 else ''}", unit="img")
    for p_idx, i_idx, texts, images in generate_images(
        pipe, prompts, args.num_images, args.seed, args.batch_size, rank=rank, world_size=world,
        guidance_scale=args.guidance_scale, num_inference_steps=steps, eta=args.eta,
    ):
        for p, i, text, arr in zip(p_idx, i_idx, texts, images_to_uint8(images)):
            name = challenge_filename(p + 1, i + 1)
            k = p * args.num_images + i  # the global image index generate_images seeds with seed + k
            record = make_record(text, args.seed + k, info, prompt_index=p + 1, image_index=i + 1)
            entries[name] = save_png(arr, out / name, record)
            n += 1
        bar.update(len(texts))
    bar.close()
    dt = time.perf_counter() - t0
    write_json(shard_record_path(out, rank, world), entries)  # this share's files, then (maybe) the folder's files
    if group:
        torch.distributed.barrier()  # every rank's images and records are on disk
        if rank == 0:
            finish_sharded_output(out, prompts, world, generation)
        torch.distributed.destroy_process_group()
    else:
        finish_sharded_output(out, prompts, world, generation)  # completes only when every share has written its record
    who = f" (rank {rank} of {world})" if world > 1 else ""
    print(f"wrote {n} images for {len(prompts)} prompts to {out}{who} in {dt:.1f} s ({n / max(dt, 1e-9):.2f} img/s)")
    return 0
