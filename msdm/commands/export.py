"""``msdm export``: a Lightning checkpoint → a self-contained folder (pipeline for the U-Net, model for the VAE)."""

NAME = "export"
HELP = "turn a MSDMUNetModule checkpoint into a pipeline folder (or a MSDMVAEModule checkpoint into a VAE folder)"


def add_arguments(parser):
    from msdm.generators.samplers import sampler_choices

    parser.add_argument("checkpoint", help="Lightning checkpoint (.ckpt)")
    parser.add_argument("--out", required=True, help="output folder (written atomically)")
    parser.add_argument("--sampler", default=None, choices=sampler_choices(),
                        help="sampler saved in the pipeline (default: the module's)")


def run(args) -> int:
    from msdm.models.loading import read_checkpoint

    ckpt = read_checkpoint(args.checkpoint)  # a missing or unreadable file is a one-line error (exit 2)
    keys = ckpt.get("state_dict", {})
    if any(k.startswith("unet.") for k in keys):
        from lightning_modules.unet_module import MSDMUNetModule

        module = MSDMUNetModule.load_from_checkpoint(args.checkpoint, map_location="cpu")
        module.export(args.out, sampler=args.sampler)
        print(f"pipeline written to {args.out} (load with MSDMPipeline.from_pretrained)")
    elif any(k.startswith("vae.") for k in keys):
        from lightning_modules.vae_module import MSDMVAEModule

        module = MSDMVAEModule.load_from_checkpoint(args.checkpoint, map_location="cpu")
        module.export(args.out)
        print(f"VAE written to {args.out} (load with MSDMVAE.from_pretrained, or pass it as --model.vae)")
    else:
        from msdm.errors import InputError

        raise InputError(f"{args.checkpoint}: neither a MSDMUNetModule nor a MSDMVAEModule checkpoint")
    return 0
