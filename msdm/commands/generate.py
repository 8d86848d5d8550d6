"""``msdm generate``: images for a prompt list in the MEDVQA-GI challenge layout.

Writes ``prompt{p:04d}_img{i:04d}.png`` (1-based) and ``prompts.json`` (``{"1": prompt, ...}``) into ``--out``.

Sharded over ranks for evaluation runs (docs/scaling.md): image ``k`` (global, prompt-major) goes to rank
``k % world_size`` and is drawn from its own seed ``seed + k``, so the union of the ranks' files is exactly what one
process writes. Under ``torchrun`` (or ``srun`` with ``MASTER_ADDR``/``MASTER_PORT`` set) every rank takes its share
and GPU ``LOCAL_RANK``; rank 0 writes ``prompts.json`` after a barrier, i.e. once every image exists. Independent
processes (a SLURM array, several machines without a rendezvous) pass ``--rank R --world-size W``; rank 0 then
writes ``prompts.json`` when its own share is done.
"""

NAME = "generate"
HELP = "generate images for a prompt file with a saved MSDM pipeline (challenge layout prompt0001_img0001.png)"


def add_arguments(parser):
    parser.add_argument("--pipeline", required=True, help="MSDM pipeline folder (msdm export / quickstart output)")
    parser.add_argument("--prompts", required=True, help="prompt file: .txt (one per line), .json (list or challenge pairs), .csv")
    parser.add_argument("--num-images", type=int, default=10, help="images per prompt (10 in the challenge)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--seed", type=int, default=0, help="image k uses seed + k (reproducible image by image)")
    parser.add_argument("--sampler", default=None, choices=["ddim", "dpm++", "dpm++sde", "ddpm", "euler"],
                        help="override the pipeline's sampler (ddim = the reference; dpm++sde = fast and matching it)")
    parser.add_argument("--steps", type=int, default=None, help="sampling steps (default: 150 for ddim, 20 for dpm++ / dpm++sde)")
    parser.add_argument("--guidance-scale", type=float, default=4.5,
                        help="diffusers convention uncond + s*(cond-uncond); 4.5 = the reference's 3.5")
    parser.add_argument("--eta", type=float, default=1.0, help="DDIM eta (1.0 = the reference)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available)")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--rank", type=int, default=None, help="this process's share (default: RANK / SLURM_PROCID, else 0)")
    parser.add_argument("--world-size", type=int, default=None,
                        help="number of shares (default: WORLD_SIZE / SLURM_NTASKS, else 1)")


def run(args) -> int:
    import os
    import time
    from pathlib import Path

    import torch

    from msdm.generation import env_rank_world, generate_images
    from msdm.io import write_json
    from msdm.pipeline import MSDMPipeline, images_to_uint8
    from msdm.prompts import challenge_filename, read_prompts

    prompts = read_prompts(args.prompts)
    env_rank, env_world, local_rank = env_rank_world()
    rank = env_rank if args.rank is None else args.rank
    world = env_world if args.world_size is None else args.world_size
    if not 0 <= rank < world:
        raise SystemExit(f"msdm generate: rank {rank} is not in [0, {world})")
    # a rendezvous exists (torchrun sets these): use it for one barrier before prompts.json
    group = world > 1 and args.rank is None and "MASTER_ADDR" in os.environ and "MASTER_PORT" in os.environ
    if group and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    device = args.device or (f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    pipe = MSDMPipeline.from_pretrained(args.pipeline, torch_dtype=dtype).to(device)
    pipe.set_progress_bar_config(disable=True)
    if args.sampler:
        pipe.set_sampler(args.sampler)
    steps = args.steps or (20 if args.sampler in ("dpm++", "dpm++sde") else 150)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from PIL import Image

    t0 = time.perf_counter()
    n = 0
    for p_idx, i_idx, _, images in generate_images(
        pipe, prompts, args.num_images, args.seed, args.batch_size, rank=rank, world_size=world,
        guidance_scale=args.guidance_scale, num_inference_steps=steps, eta=args.eta,
    ):
        for p, i, arr in zip(p_idx, i_idx, images_to_uint8(images)):
            Image.fromarray(arr).save(out / challenge_filename(p + 1, i + 1))
            n += 1
    dt = time.perf_counter() - t0
    if group:
        torch.distributed.barrier()  # every rank's images are on disk
    if rank == 0:
        write_json(out / "prompts.json", {str(k + 1): s for k, s in enumerate(prompts)})
    if group:
        torch.distributed.destroy_process_group()
    who = f" (rank {rank} of {world})" if world > 1 else ""
    print(f"wrote {n} images for {len(prompts)} prompts to {out}{who} in {dt:.1f} s ({n / max(dt, 1e-9):.2f} img/s)")
    return 0
