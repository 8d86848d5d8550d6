"""``msdm quickstart --data kvasir`` (the default): small MSDM on the packaged real Kvasir-SEG frames, scored.

Data: the 698 real colonoscopy frames with polyp masks shipped in the package (:mod:`msdm.facts.sample`, 64 px,
CC BY 4.0), split once by :func:`msdm.data.splits.heldout_split`: 498 train, 200 held out (never trained on; the
split of ``bench/real_kvasir.py``). Training captions join 1..K true facts of a frame in the MEDVQA-GI phrasings
(:mod:`msdm.facts`). The modules' settings come from :data:`msdm.training.recipes.RECIPES` (``--recipe msdm``, the
default, or ``paper``); :data:`KVASIR` below holds only the quickstart's budget. After training it prints:

* FID (Inception) of one image per held-out frame (its full true caption, seed ``seed + i``) against the held-out
  frames, beside the real-vs-real floor at the same n (training frames vs the held-out frames), and the share of
  saturated pixels, generated vs real (:class:`msdm.metrics.realism.heldout.HeldOutRealism`);
* the paired adherence on real attributes (:data:`~msdm.metrics.adherence.real_detector.REAL_PAIRS` read by
  :class:`~msdm.metrics.adherence.real_detector.RealFrameDetector`, the same seeds under a prompt and its contrast);
* ``samples.png``: one row per REAL_PAIRS prompt, its generated images, then held-out real frames that satisfy it.

One seed: a demonstration, not a measurement (docs/benchmarks.md, "Real frames", has the 3-seed figures).
Not a command of its own (no ``NAME``): ``msdm.commands.quickstart`` calls :func:`run_kvasir`.
"""

from __future__ import annotations

#: The quickstart's budget on real frames (<= 10 min on 2 idle CPU cores at these defaults, docs/quickstart.md).
#: Everything else (latent channels, prediction type, schedule, loss, lr, guidance, sampler, caption facts, text
#: tokens) is the recipe's: msdm.training.recipes.RECIPES[recipe]. Options given on the command line win.
KVASIR = {"recipe": "msdm", "vae_steps": 1200, "unet_steps": 2000, "adherence_images": 16, "grid_images": 6,
          "grid_real": 4,
          # At 2 000 U-Net steps the recipe's autoguidance (the EMA at half the run guides) still lacks the box
          # prompt (seed 0: gap 0.69 vs 0.81 with CFG 1.5, docs/benchmarks.md): this short budget keeps CFG 1.5.
          "unet": {"autoguidance": None, "guidance_scale": 1.5}}


def _recipe(args) -> dict:
    """The recipe with the command line's explicit options applied (``args`` gains the resolved budget)."""
    from msdm.errors import InputError
    from msdm.training.recipes import RECIPES, get_recipe

    name = args.recipe or KVASIR["recipe"]
    if name not in RECIPES:
        raise InputError(f"--recipe {name} is a synthetic-scenes recipe; on real frames choose one of "
                         f"{', '.join(RECIPES)} (msdm.training.recipes) or pass --data synthetic")
    args.recipe = name
    recipe = get_recipe(name)
    for key in ("vae_steps", "unet_steps"):
        if getattr(args, key) is None:
            setattr(args, key, KVASIR[key])
    for key in ("vae_batch_size", "batch_size", "caption_facts"):
        if getattr(args, key) is None:
            setattr(args, key, recipe[key])
    if args.adherence_images is None:
        args.adherence_images = KVASIR["adherence_images"]
    unet = recipe["unet"]
    if name == KVASIR["recipe"]:
        unet.update(KVASIR["unet"])
    for opt, key in (("guidance_scale", "guidance_scale"), ("sampler", "sampler"), ("sample_steps",
                     "num_inference_steps"), ("max_length", "max_length"), ("unet_lr", "lr")):
        if getattr(args, opt) is not None:
            unet[key] = getattr(args, opt)
    if args.vae_lr is not None:
        recipe["vae"]["lr"] = args.vae_lr
    if getattr(args, "decoder_steps", None) is not None:
        if args.decoder_steps < 0:
            raise InputError(f"--decoder-steps must be >= 0, got {args.decoder_steps}")
        recipe["vae"]["decoder_steps"] = args.decoder_steps
    return recipe


def _grid_rows(prompts, generated, held_frames, held_images, n_gen: int, n_real: int):
    """Per prompt: ``n_gen`` generated images, a white spacer, ``n_real`` held-out frames that satisfy the prompt
    (grey where fewer do). Returns the images prompt-major and the real frames' ids per prompt."""
    import torch

    from msdm.metrics.adherence.real_retrieval import frames_satisfying

    size = held_images.shape[1:]
    rows, ids = [], {}
    for k, prompt in enumerate(prompts):
        real = frames_satisfying(prompt, held_frames)[:n_real]
        ids[prompt] = [held_frames[i][0] for i in real]
        tiles = [generated[k][:n_gen], torch.ones(1, *size)] + [held_images[i : i + 1] for i in real]
        tiles += [torch.full((n_real - len(real), *size), 0.5)]
        rows.append(torch.cat(tiles))
    return torch.cat(rows), ids


def run_kvasir(args, make_trainer) -> int:
    """The real-frames quickstart; ``make_trainer(root, steps, accelerator, name, callbacks)`` as the quickstart's."""
    import time
    from pathlib import Path

    import lightning.pytorch as pl
    import torch

    from datamodules.fact_captions import FactCaptionDataModule
    from lightning_modules import MSDMUNetModule, MSDMVAEModule
    from lightning_modules.callbacks.images import SampleGrid
    from msdm.errors import InputError
    from msdm.facts.dataset import FactFramesDataset
    from msdm.facts.sample import N_HELDOUT, SAMPLE_RESOLUTION, overlay_labels_path, sample_folders
    from msdm.io import write_json
    from msdm.metrics.adherence.paired import format_paired, pair_counts, paired_result
    from msdm.metrics.adherence.real_detector import REAL_PAIRS, RealFrameDetector
    from msdm.metrics.realism.heldout import HeldOutRealism
    from msdm.provenance import save_grid
    from msdm.training.recipes import vae_fit_steps

    if args.resolution != SAMPLE_RESOLUTION:
        raise InputError(f"the packaged Kvasir-SEG sample is {SAMPLE_RESOLUTION} px: drop --resolution {args.resolution}"
                         ", or train on your own folders with msdm fit -c configs/msdm_unet_kvasir_seg.yaml")
    recipe = _recipe(args)
    prompts = [p for pair in REAL_PAIRS.values() for p in pair]
    from msdm.io import claim_output_dir, write_output_marker

    out = Path(args.out).resolve()
    if args.vae_ckpt and out in Path(args.vae_ckpt).resolve().parents:
        raise InputError(f"--vae-ckpt {args.vae_ckpt} is inside --out {args.out}, which the quickstart writes "
                         "afresh: copy the checkpoint elsewhere or choose another --out")
    claim_output_dir(out, getattr(args, "overwrite", False), writer="msdm quickstart")
    times: dict[str, float] = {}
    pl.seed_everything(args.seed, verbose=False)

    def datamodule(batch_size):  # the same frames, split and captions for both stages; only the batch differs
        return FactCaptionDataModule(data=[str(f) for f in sample_folders()], overlay_labels=str(overlay_labels_path()),
                                     heldout=N_HELDOUT, resolution=SAMPLE_RESOLUTION, caption_facts=args.caption_facts,
                                     seed=args.seed, batch_size=batch_size, val_prompts=prompts, flips=True)

    u = recipe["unet"]
    decoder = recipe["vae"].get("decoder_steps", 0)
    print(f"recipe: {args.recipe} (msdm.training.recipes; VAE {args.vae_steps} steps"
          f"{f' + {decoder} decoder steps' if decoder else ''} at batch {args.vae_batch_size}; "
          f"U-Net {args.unet_steps} steps at batch {args.batch_size}, {u.get('prediction_type', 'epsilon')}, captions "
          f"of 1..{args.caption_facts} true facts; {u.get('sampler')} {u.get('num_inference_steps')} steps, guidance "
          f"{u.get('guidance_scale'):g})")
    t = time.perf_counter()
    if args.vae_ckpt:
        print(f"[1/4] VAE: reusing {args.vae_ckpt}")
        vae_ckpt = Path(args.vae_ckpt).resolve()
    else:
        print(f"[1/4] VAE on 498 real Kvasir-SEG frames (packaged sample, {SAMPLE_RESOLUTION}², 200 held out), "
              f"{args.vae_steps} steps{f' + {decoder} decoder steps on noisy latents' if decoder else ''}")
        vae = MSDMVAEModule(**{"test_fid": False, **recipe["vae"]})  # no test stage here: no Inception in the module
        make_trainer(out, vae_fit_steps(recipe, args.vae_steps), args.accelerator, "vae").fit(
            vae, datamodule=datamodule(args.vae_batch_size))
        vae_ckpt = out / "vae" / "checkpoints" / "last.ckpt"
    times["vae"] = time.perf_counter() - t

    print(f"[2/4] U-Net with {args.text_encoder}, {args.unet_steps} steps")
    t = time.perf_counter()
    dm = datamodule(args.batch_size)
    unet = MSDMUNetModule(**u, vae=str(vae_ckpt), text_encoder=args.text_encoder, image_size=SAMPLE_RESOLUTION,
                          cfg_dropout=args.cfg_dropout, sample_prompts=prompts, fused_optimizer=True)
    # 63 steps an epoch on 498 frames: a validation grid every 8th epoch (~500 steps), not at every validation
    trainer = make_trainer(out, args.unet_steps, args.accelerator, "unet",
                           [SampleGrid(prompts, num_images_per_prompt=1, seed=args.seed, every_n_epochs=8)])
    trainer.fit(unet, datamodule=dm)
    times["unet"] = time.perf_counter() - t
    unet.export(str(out / "pipeline"))

    print("[3/4] FID against the held-out frames, with the real-vs-real floor")
    t = time.perf_counter()
    held = dm.val_dataset
    n_eval = min(args.eval_images or len(held), len(held))
    held_frames = held.frames[:n_eval]
    held_images = torch.stack([held[i]["pixel_values"] for i in range(n_eval)]).add(1).div(2)
    train_ref = FactFramesDataset(dm.train_dataset.frames, resolution=SAMPLE_RESOLUTION, fixed=True)
    ref_images = torch.stack([train_ref[i]["pixel_values"] for i in range(len(train_ref))]).add(1).div(2)
    held_prompts = [held.full_caption(i) for i in range(n_eval)]
    with torch.no_grad():
        generated = unet.generate_with_seeds(held_prompts, [args.seed + i for i in range(n_eval)])
    realism = HeldOutRealism(held_images, ref_images, seed=args.seed).score(generated)
    times["fid"] = time.perf_counter() - t

    print("[4/4] paired adherence on real attributes, sample grid")
    t = time.perf_counter()
    n = max(args.adherence_images, KVASIR["grid_images"])
    seeds = list(range(args.seed, args.seed + n))
    with torch.no_grad():
        images = unet.generate_with_seeds([p for p in prompts for _ in seeds], seeds * len(prompts))
    paired = paired_result(pair_counts(RealFrameDetector().detect(images), REAL_PAIRS, n), n)
    per_prompt = images.view(len(prompts), n, *images.shape[1:])
    rows, real_ids = _grid_rows(prompts, per_prompt, held_frames, held_images, KVASIR["grid_images"],
                                KVASIR["grid_real"])
    grid = out / "samples.png"
    final = save_grid(rows, grid, prompts, args.seed, unet.generation_info(),
                      layout=f"one row per prompt: {KVASIR['grid_images']} generated images (column j: seed + j, the "
                      f"same noise in a prompt's row and its contrast's), a white spacer, then up to "
                      f"{KVASIR['grid_real']} held-out real frames that satisfy the prompt (grey: fewer do)",
                      real_frames=real_ids)
    trainer.logger.experiment.add_image("samples", final, trainer.global_step)
    for attr in REAL_PAIRS:
        trainer.logger.experiment.add_scalar(f"adherence/{attr}_gap", paired[attr]["gap"], trainer.global_step)
    trainer.logger.experiment.add_scalar("fid/heldout", realism["fid"], trainer.global_step)
    trainer.logger.experiment.flush()
    times["adherence+grid"] = time.perf_counter() - t
    write_json(out / "results.json", {"data": "kvasir (packaged sample, msdm.facts.sample)", "recipe": args.recipe,
                                      "recipe_settings": recipe, "seed": args.seed, "realism": realism,
                                      "paired": paired, "pairs": REAL_PAIRS, "adherence_seeds": [seeds[0], seeds[-1]],
                                      "generation": unet.generation_info(), "times_s": times})

    total = sum(times.values())
    print("\nmsdm quickstart finished (real Kvasir-SEG frames)")
    for k, v in times.items():
        print(f"  {k:<15} {v:7.1f} s")
    print(f"  {'total':<15} {total:7.1f} s")
    print(f"\n  ONE seed ({args.seed}): a demonstration, not a measurement; docs/benchmarks.md (Real frames) has the "
          "3-seed figures.")
    r = realism
    print(f"  FID (Inception) of {r['n']} generated images vs the {r['n']} held-out frames: {r['fid']:.1f}; "
          f"real-vs-real floor at the same n (training vs held-out frames): {r['floor']:.1f}; ratio {r['ratio']:.2f}")
    print(f"  saturated pixels (values at 255): generated {r['clipped_255']:.4f}, real {r['real_clipped_255']:.4f}; "
          f"at 0: generated {r['clipped_0']:.4f}, real {r['real_clipped_0']:.4f}")
    print(f"\n  paired adherence on real attributes ({n} images per prompt, the same seeds under a prompt and its "
          "contrast; RealFrameDetector)")
    print("    " + format_paired(paired).replace("\n", "\n    "))
    print(f"\n  sample grid     {grid}  (rows: the REAL_PAIRS prompts; generated | real held-out frames that satisfy "
          "the prompt)")
    print(f"  results         {out / 'results.json'}")
    print(f"  pipeline        {out / 'pipeline'}  (MSDMPipeline.from_pretrained, or msdm generate --pipeline ...)")
    print(f"  checkpoints     {vae_ckpt}, {out / 'unet' / 'checkpoints' / 'last.ckpt'}")
    print(f"  TensorBoard     tensorboard --logdir {out}")
    write_output_marker(out, writer="msdm quickstart")  # complete: every file in it listed as msdm's
    return 0
