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



def add_arguments(parser):
    from msdm.dtypes import DTYPE_CHOICES
    from msdm.generators.samplers import sampler_choices

    parser.add_argument("--pipeline", required=True, help="MSDM pipeline folder (msdm export / quickstart output)")
    parser.add_argument("--prompts", required=True, help="prompt file: .txt (one per line), .json (list or challenge pairs), .csv")
    parser.add_argument("--num-images", type=int, default=10, help="images per prompt (10 in the challenge)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--seed", type=int, default=0, help="image k uses seed + k (reproducible image by image)")
    parser.add_argument("--sampler", default=None, choices=sampler_choices(),
                        help="override the pipeline's sampler (ddim = the reference; dpm++sde = fast, closest to it)")
    parser.add_argument("--steps", type=int, default=None,
                        help="sampling steps (default: the sampler's, msdm.generators.samplers: 150 for ddim, 20 for "
                             "dpm++ / dpm++sde — the sampler given, else the pipeline's)")
    parser.add_argument("--guidance-scale", type=float, default=None,
                        help="diffusers convention uncond + s*(cond-uncond); default: the pipeline folder's "
                             "config.guidance_scale (what its run sampled with; 4.5 = the reference's 3.5 for older "
                             "folders)")
    parser.add_argument("--eta", type=float, default=1.0, help="DDIM eta (1.0 = the reference)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda:LOCAL_RANK if available)")
    parser.add_argument("--dtype", default="fp32", choices=list(DTYPE_CHOICES))
    parser.add_argument("--model-name", default=None,
                        help="model name written into the provenance (default: MSDM + the pipeline folder's name)")
    parser.add_argument("--rank", type=int, default=None, help="this process's share (default: RANK / SLURM_PROCID, else 0)")
    parser.add_argument("--world-size", type=int, default=None,
                        help="number of shares (default: WORLD_SIZE / SLURM_NTASKS, else 1)")


def run(args) -> int:
    import os
    import time

    import torch

    from msdm.errors import InputError
    from msdm.generators import SEED_RULE, env_rank_world, shard, write_challenge_folder
    from msdm.pipeline import load_generator
    from msdm.progress import progress_bar
    from msdm.prompts import read_prompts

    prompts = read_prompts(args.prompts)
    env_rank, env_world, _ = env_rank_world()
    rank = env_rank if args.rank is None else args.rank
    world = env_world if args.world_size is None else args.world_size
    if not 0 <= rank < world:
        raise InputError(f"--rank {rank} is not in [0, --world-size {world})")
    # a rendezvous exists (torchrun sets these): use it for one barrier before the folder-level files
    group = world > 1 and args.rank is None and "MASTER_ADDR" in os.environ and "MASTER_PORT" in os.environ
    if group and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    generator = load_generator(args.pipeline, args.sampler, args.steps, args.guidance_scale, args.eta,
                               args.batch_size, args.device, args.dtype, args.model_name)
    info = {**generator.info(), "dtype": args.dtype, "resolution": int(generator.pipe.config.resolution),
            "seed_rule": SEED_RULE}

    t0 = time.perf_counter()
    share = len(shard(range(len(prompts) * args.num_images), rank, world))
    bar = progress_bar(total=share, desc=f"generate{f' (rank {rank}/{world})' if world > 1 else ''}", unit="img")
    n = write_challenge_folder(generator, prompts, args.out, args.num_images, args.seed, rank, world,
                               args.batch_size, info=info, progress=bar.update,
                               barrier=torch.distributed.barrier if group else None)
    bar.close()
    if group:
        torch.distributed.destroy_process_group()
    dt = time.perf_counter() - t0
    who = f" (rank {rank} of {world})" if world > 1 else ""
    print(f"wrote {n} images for {len(prompts)} prompts to {args.out}{who} in {dt:.1f} s ({n / max(dt, 1e-9):.2f} img/s)")
    return 0
