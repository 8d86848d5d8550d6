"""``msdm quickstart``: train a small MSDM end to end, offline, on this machine's CPU.

``--data kvasir`` (default): on the 698 real Kvasir-SEG frames shipped in the package, with captions from their true
facts, then FID against 200 held-out frames beside the real-vs-real floor, saturation, the real-attribute paired
adherence and a grid of generated images beside real frames that satisfy each prompt
(:mod:`msdm.commands._quickstart_kvasir`). ``--data synthetic``: on the embedded synthetic colonoscopy scenes with
their own adherence table (below). Either way stage 1 trains the ``small`` VAE, stage 2 the ``small`` U-Net on its
latents with the real pretrained all-MiniLM-L6-v2 text encoder shipped on PyPI; then the pipeline is exported and a
sample grid is written. The same steps run on full-size data through ``msdm fit -c configs/msdm_{vae,unet}_*.yaml``
(docs/quickstart.md).
"""

NAME = "quickstart"
HELP = ("train a small MSDM (VAE, then U-Net) on real colonoscopy frames shipped with msdm (or synthetic scenes), "
        "offline on CPU; print FID and prompt adherence, write a sample grid")

# The grid's rows: each yes/no attribute the adherence metric scores, asked for and then negated (the paired prompts
# of msdm.metrics.adherence.DEFAULT_PAIRS, kept literal here so the module imports nothing heavy). Column j of
# every row uses seed + j: a row and its negation start from the same noise, so any difference is the prompt's.
PAIRS = {
    "polyp": ("Generate an image containing a polyp.", "Generate an image with no polyps."),
    "box": ("Generate an image containing a green/black box artefact.",
            "Generate an image not containing a green/black box artefact."),
    "instrument": ("Generate an image with 1 instrument.", "Generate an image with no instruments."),
    "text": ("Generate an image containing text.", "Generate an image not containing text."),
}
PROMPTS = [p for pair in PAIRS.values() for p in pair]


def add_arguments(parser):
    from msdm.generators.samplers import sampler_choices

    parser.add_argument("--out", default="msdm_quickstart",
                        help="output folder (default: ./msdm_quickstart); must be new or empty unless --overwrite")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace --out if it is a folder msdm wrote (a folder with anything else is refused)")
    parser.add_argument("--data", default="kvasir", choices=["kvasir", "synthetic"],
                        help="kvasir (default): the 698 real Kvasir-SEG frames shipped with msdm (64 px, CC BY 4.0; 200 "
                             "held out for scoring); synthetic: the embedded synthetic scenes")
    # Budget: <= 10 minutes on 2 CPU cores; docs/benchmarks.md (Quickstart, Prompt adherence) has the measured
    # split and what each default below buys in paired adherence.
    parser.add_argument("--recipe", default=None, choices=["msdm", "adherent", "paper"],
                        help="real frames: msdm (default) or paper, the recipes of msdm.training.recipes; synthetic "
                             "scenes: adherent (default, the measured prompt-following recipe) or paper (one caption "
                             "per image per step, guidance 3, VAE 300 steps at batch 16). Options given explicitly "
                             "override the recipe")
    parser.add_argument("--vae-steps", type=int, default=None,
                        help="VAE optimizer steps (real frames 1200; synthetic: adherent 700, paper 300)")
    parser.add_argument("--vae-batch-size", type=int, default=None, help="VAE batch (recipe's; synthetic paper 16)")
    parser.add_argument("--decoder-steps", type=int, default=None,
                        help="real frames: VAE decoder-phase steps on noisy latents after --vae-steps (recipe's: msdm "
                             "600, paper 0; msdm.training.decoder_phase)")
    parser.add_argument("--unet-steps", type=int, default=None,
                        help="U-Net optimizer steps (real frames 2000; synthetic: adherent 1200, paper 800)")
    parser.add_argument("--num-train", type=int, default=2048, help="synthetic training scenes")
    parser.add_argument("--batch-size", type=int, default=None, help="U-Net batch (recipe's; synthetic paper 16)")
    parser.add_argument("--resolution", type=int, default=64, help="image side (real frames: 64, the sample's)")
    parser.add_argument("--eval-images", type=int, default=None,
                        help="real frames: held-out frames scored for FID (default all 200; the floor uses as many)")
    parser.add_argument("--sampler", default=None, choices=sampler_choices(),
                        help="sampler of the grid and the exported pipeline (default: the recipe's; synthetic dpm++sde: "
                             "stochastic like the reference's DDIM eta=1, docs/benchmarks.md, Fast sampling)")
    parser.add_argument("--sample-steps", type=int, default=None,
                        help="sampling steps of the grid, the adherence check and the pipeline (default: the sampler's, "
                             "msdm.generators.samplers: 20 for dpm++sde)")
    parser.add_argument("--text-encoder", default="builtin:all-MiniLM-L6-v2",
                        help="text encoder (default: the offline all-MiniLM-L6-v2 shipped on PyPI)")
    parser.add_argument("--caption-facts", type=int, default=None,
                        help="training captions join 1..K true facts of a scene (adherent 8; paper 1: one caption)")
    parser.add_argument("--max-length", type=int, default=None, help="text tokens seen by the U-Net (adherent 128 for "
                        "the joined captions; paper 64)")
    parser.add_argument("--cfg-dropout", type=float, default=0.2, help="per-sample empty-prompt rate while training")
    parser.add_argument("--guidance-scale", type=float, default=None, help="CFG scale of the grid, the adherence "
                        "check and the exported pipeline, diffusers convention (adherent 10, paper 3)")
    parser.add_argument("--unet-lr", type=float, default=None, help="U-Net learning rate (recipe's; synthetic 1e-3)")
    parser.add_argument("--vae-lr", type=float, default=None, help="VAE learning rate (recipe's; synthetic 1e-3)")
    parser.add_argument("--vae-ckpt", default=None, help="reuse a trained stage-1 checkpoint (skips the VAE stage)")
    parser.add_argument("--adherence-images", type=int, default=None,
                        help="images per prompt for the paired adherence check after training (default 16; 0: skip "
                             "on synthetic scenes, the grid's 6 on real frames)")
    parser.add_argument("--accelerator", default="cpu", help="cpu (default), gpu, auto")
    parser.add_argument("--seed", type=int, default=0)


#: What --recipe sets when an option is not given (docs/benchmarks.md, Prompt adherence, has the measurements).
RECIPES = {
    "adherent": {"vae_steps": 700, "vae_batch_size": 8, "unet_steps": 1200, "batch_size": 8, "caption_facts": 8,
                 "max_length": 128, "guidance_scale": 10.0},
    "paper": {"vae_steps": 300, "vae_batch_size": 16, "unet_steps": 800, "batch_size": 16, "caption_facts": 1,
              "max_length": 64, "guidance_scale": 3.0},
}


def resolve_recipe(args) -> None:
    """Fill the options left unset (None) from ``args.recipe`` (synthetic scenes; default ``adherent``)."""
    from msdm.errors import InputError

    if getattr(args, "recipe", None) is None:
        args.recipe = "adherent"
    if args.recipe not in RECIPES:
        raise InputError(f"--recipe {args.recipe} is a real-frames recipe; on synthetic scenes choose one of "
                         f"{', '.join(RECIPES)}")
    for key, value in RECIPES[args.recipe].items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)


def _trainer(root, steps, accelerator, name, callbacks=()):
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import TensorBoardLogger

    from lightning_modules.progress_bar import MSDMProgressBar

    # Validation on 2 batches every 2nd epoch: val/loss curves, VAE reconstructions and (U-Net) sample grids in
    # TensorBoard for a few seconds per validation.
    return pl.Trainer(
        accelerator=accelerator, devices=1, max_steps=steps, default_root_dir=root,
        logger=TensorBoardLogger(root, name=name, version="", default_hp_metric=False),
        callbacks=[ModelCheckpoint(dirpath=f"{root}/{name}/checkpoints", save_last=True, save_top_k=0),
                   MSDMProgressBar(), *callbacks],
        limit_val_batches=2, check_val_every_n_epoch=2, num_sanity_val_steps=0, log_every_n_steps=20,
        enable_model_summary=False,
    )


def run(args) -> int:
    import time
    from pathlib import Path

    import lightning.pytorch as pl
    from torchvision.utils import save_image

    from datamodules.synthetic import SyntheticGIDataModule
    from lightning_modules import MSDMUNetModule, MSDMVAEModule
    from lightning_modules.callbacks.images import SampleGrid
    from msdm.errors import InputError
    from msdm.io import claim_output_dir, write_json, write_output_marker
    from msdm.provenance import save_grid

    if getattr(args, "data", "synthetic") == "kvasir":
        from msdm.commands._quickstart_kvasir import run_kvasir

        return run_kvasir(args, _trainer)
    if getattr(args, "decoder_steps", None) is not None:
        raise InputError("--decoder-steps is the real-frames VAE's decoder phase; the synthetic scenes' recipes have "
                         "none (drop it, or leave out --data synthetic)")
    resolve_recipe(args)
    for key, value in (("sampler", "dpm++sde"), ("unet_lr", 1e-3), ("vae_lr", 1e-3), ("adherence_images", 16)):
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    if args.sample_steps is None:
        from msdm.generators.samplers import default_steps

        args.sample_steps = default_steps(args.sampler)
    out = Path(args.out).resolve()
    if args.vae_ckpt and out in Path(args.vae_ckpt).resolve().parents:
        raise InputError(f"--vae-ckpt {args.vae_ckpt} is inside --out {args.out}, which the quickstart writes "
                         "afresh: copy the checkpoint elsewhere or choose another --out")
    claim_output_dir(out, args.overwrite, writer="msdm quickstart")
    times = {}
    pl.seed_everything(args.seed, verbose=False)

    def datamodule(batch_size):
        # the same scenes (seed) for both stages; only the batch differs
        return SyntheticGIDataModule(num_train=args.num_train, num_val=64, resolution=args.resolution, seed=args.seed,
                                     batch_size=batch_size, num_workers=0, val_prompts=PROMPTS,
                                     caption_facts=args.caption_facts)

    print(f"recipe: {args.recipe} (VAE {args.vae_steps} steps at batch {args.vae_batch_size}; U-Net {args.unet_steps} "
          f"steps at batch {args.batch_size}, captions of 1..{args.caption_facts} facts; guidance {args.guidance_scale:g})")
    t = time.perf_counter()
    if args.vae_ckpt:
        print(f"[1/3] VAE: reusing {args.vae_ckpt}")
        vae_ckpt = Path(args.vae_ckpt).resolve()
    else:
        print(f"[1/3] VAE (preset small) on {args.num_train} synthetic scenes at {args.resolution}², "
              f"{args.vae_steps} steps")
        vae = MSDMVAEModule(preset="small", lr=args.vae_lr)
        # batch 8: at equal compute the box artefact survives reconstruction ~2x sooner than at batch 16
        # (docs/benchmarks.md, Prompt adherence: the first stage)
        _trainer(out, args.vae_steps, args.accelerator, "vae").fit(vae, datamodule=datamodule(args.vae_batch_size))
        vae_ckpt = out / "vae" / "checkpoints" / "last.ckpt"
    times["vae"] = time.perf_counter() - t

    print(f"[2/3] U-Net (preset small) with {args.text_encoder}, {args.unet_steps} steps")
    t = time.perf_counter()
    dm = datamodule(args.batch_size)
    unet = MSDMUNetModule(
        preset="small", vae=str(vae_ckpt), text_encoder=args.text_encoder, latent_scaling="auto", lr=args.unet_lr,
        lr_warmup_steps=100, loss_type="mse", ema_decay=0.995, sampler=args.sampler, num_inference_steps=args.sample_steps,
        guidance_scale=args.guidance_scale, cfg_dropout=args.cfg_dropout, sample_prompts=PROMPTS,
        text_chunking="sentence",  # joined training captions: each sentence encoded once (PromptEncoder)
        max_length=args.max_length,
        image_size=args.resolution,
        fused_optimizer=True,  # the fused AdamW kernel: ~8 % of a CPU step saved at batch 8
    )
    unet_trainer = _trainer(out, args.unet_steps, args.accelerator, "unet",
                            [SampleGrid(PROMPTS, num_images_per_prompt=1, num_inference_steps=args.sample_steps,
                                        seed=args.seed)])
    unet_trainer.fit(unet, datamodule=dm)
    times["unet"] = time.perf_counter() - t

    print("[3/3] export, sample grid" + (", paired adherence" if args.adherence_images else ""))
    t = time.perf_counter()
    pipe_dir = out / "pipeline"
    unet.export(str(pipe_dir))
    # One generation pass serves the grid and the adherence check: every prompt with seeds seed .. seed + n - 1.
    n = max(args.adherence_images, 6)
    seeds = list(range(args.seed, args.seed + n))
    images = unet.generate_with_seeds([p for p in PROMPTS for _ in seeds], seeds * len(PROMPTS))
    per_prompt = images.view(len(PROMPTS), n, *images.shape[1:])
    grid = out / "samples.png"
    # the grid carries its provenance like every generated image (msdm provenance msdm_quickstart/samples.png)
    final = save_grid(per_prompt[:, :6].reshape(-1, *images.shape[1:]), grid, PROMPTS, args.seed,
                      unet.generation_info(), layout="one row per prompt, 6 images per row; column j uses seed + j "
                      "in every row (a prompt and its negation start from the same noise)")
    # the final grid in TensorBoard too, next to the grids of the validations (tag "samples")
    unet_trainer.logger.experiment.add_image("samples", final, unet_trainer.global_step)
    real = next(iter(dm.val_dataloader()))["pixel_values"][:6]
    save_image((real + 1) / 2, out / "real_examples.png", nrow=6)
    paired = None
    if args.adherence_images:
        from msdm.metrics.adherence import SceneDetector, format_paired, pair_counts, paired_result

        paired = paired_result(pair_counts(SceneDetector().detect(images), PAIRS, n), n)
        write_json(out / "adherence.json", {"paired": paired, "pairs": PAIRS, "seeds": [seeds[0], seeds[-1]],
                                            "generation": unet.generation_info()})
        for attr in PAIRS:
            unet_trainer.logger.experiment.add_scalar(f"adherence/{attr}_gap", paired[attr]["gap"],
                                                      unet_trainer.global_step)
        unet_trainer.logger.experiment.add_scalar("adherence/mean_gap", paired["mean_gap"], unet_trainer.global_step)
    unet_trainer.logger.experiment.flush()
    times["export+samples"] = time.perf_counter() - t
    write_output_marker(out, writer="msdm quickstart")  # complete: every file in it listed as msdm's

    total = sum(times.values())
    print("\nmsdm quickstart finished")
    for k, v in times.items():
        print(f"  {k:<15} {v:7.1f} s")
    print(f"  {'total':<15} {total:7.1f} s")
    if paired is not None:
        print(f"\n  paired adherence ({n} images per prompt, same seeds under a prompt and its negation; "
              f"detection rates by msdm.metrics.adherence.SceneDetector)")
        print("    " + format_paired(paired).replace("\n", "\n    "))
    print(f"\n  sample grid     {grid}  (rows: {' | '.join(PROMPTS)})")
    print(f"  real examples   {out / 'real_examples.png'}")
    if paired is not None:
        print(f"  adherence       {out / 'adherence.json'}  (msdm evaluate --adherence on generated folders)")
    print(f"  pipeline        {pipe_dir}  (MSDMPipeline.from_pretrained, or msdm generate --pipeline ...)")
    print(f"  checkpoints     {vae_ckpt}, {out / 'unet' / 'checkpoints' / 'last.ckpt'}")
    print(f"  TensorBoard     tensorboard --logdir {out}")
    return 0
