"""``msdm export``: a Lightning checkpoint → a self-contained folder (pipeline for the U-Net, model for the VAE)."""

NAME = "export"
HELP = "turn a MSDMUNetModule checkpoint into a pipeline folder (or a MSDMVAEModule checkpoint into a VAE folder)"


def add_arguments(parser):
    from msdm.generators.samplers import sampler_choices

    parser.add_argument("checkpoint", help="Lightning checkpoint (.ckpt)")
    parser.add_argument("--out", required=True,
                        help="output folder (written atomically); must be new or empty unless --overwrite")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace --out if it is a folder msdm wrote (a folder with anything else is refused)")
    parser.add_argument("--sampler", default=None, choices=sampler_choices(),
                        help="sampler saved in the pipeline (default: the module's)")
    parser.add_argument("--vae", default=None,
                        help="U-Net checkpoints: the VAE to export with it (a MSDMVAEModule checkpoint, VAE or "
                             "pipeline "
                             "folder); default: the checkpoint's own copy, or, for checkpoints of older msdm versions, "
                             "the VAE path it was trained with")


def run(args) -> int:
    from msdm.io import check_output_dir
    from msdm.models.loading import read_checkpoint

    check_output_dir(args.out, args.overwrite)  # before any work: never deletes what msdm did not write
    ckpt = read_checkpoint(args.checkpoint)  # a missing or unreadable file is a one-line error (exit 2)
    keys = ckpt.get("state_dict", {})
    if any(k.startswith("unet.") for k in keys):
        from lightning_modules.unet_module import MSDMUNetModule

        override = {"vae": args.vae} if args.vae else {}
        module = MSDMUNetModule.load_from_checkpoint(args.checkpoint, map_location="cpu", **override)
        module.export(args.out, sampler=args.sampler)
        print(f"pipeline written to {args.out} (load with MSDMPipeline.from_pretrained)")
    elif any(k.startswith("vae.") for k in keys):
        from lightning_modules.vae_module import MSDMVAEModule

        if args.vae:
            from msdm.errors import InputError

            raise InputError(f"--vae is for U-Net checkpoints; {args.checkpoint} is a VAE checkpoint (drop --vae)")

        module = MSDMVAEModule.load_from_checkpoint(args.checkpoint, map_location="cpu")
        module.export(args.out)
        print(f"VAE written to {args.out} (load with MSDMVAE.from_pretrained, or pass it as --model.vae)")
    else:
        from msdm.errors import InputError

        raise InputError(f"{args.checkpoint}: neither a MSDMUNetModule nor a MSDMVAEModule checkpoint")
    return 0
