"""``msdm cache``: fill the latent + text cache of a training config, so that ``msdm fit`` trains from it with the
VAE and text encoder unloaded.

It reads the same config as ``msdm fit`` (``cli.yaml`` defaults, ``-c`` files, then LightningCLI overrides after
``--``), so the fingerprints match what the fit will look for::

    msdm cache -c configs/quickstart_unet.yaml -- --model.init_args.vae=VAE.ckpt --model.init_args.cache_dir=cache
    msdm fit   -c configs/quickstart_unet.yaml --model.init_args.vae=VAE.ckpt --model.init_args.cache_dir=cache

Many GPUs / nodes: start it under ``torchrun --nproc_per_node=N`` or ``srun``. Each process reads the whole loader
and encodes the sample ids that hash to its rank (no process group, no collective: ranks never wait on each other),
writing its own shards; a fit then finds every rank's completion marker and skips its fill pass.
"""

NAME = "cache"
HELP = "precompute VAE posteriors and text-encoder states for a training config (msdm fit reads them)"


def add_arguments(parser):
    import argparse

    parser.add_argument("-c", "--config", action="append", default=[], help="LightningCLI config file (repeatable)")
    parser.add_argument("--splits", nargs="+", default=["train", "val"], choices=["train", "val", "test"],
                        help="which loaders of the DataModule to cache (default: train val)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda:LOCAL_RANK if available)")
    parser.add_argument("--max-batches", type=int, default=None, help="stop each pass early (smoke tests)")
    parser.add_argument("--rank", type=int, default=None, help="this process's share (default: RANK / SLURM_PROCID)")
    parser.add_argument("--world-size", type=int, default=None, help="number of shares (default: WORLD_SIZE / SLURM_NTASKS)")
    parser.add_argument("overrides", nargs=argparse.REMAINDER,
                        help="after `--`: LightningCLI overrides, e.g. -- --model.init_args.cache_dir=cache")


def run(args) -> int:
    import time

    import torch
    from lightning.pytorch import LightningDataModule, LightningModule

    from lightning_modules.cli import MSDMLightningCLI, default_config_files
    from msdm.cache.fill import env_rank_world

    overrides = list(args.overrides)
    if overrides[:1] == ["--"]:
        overrides = overrides[1:]
    cli_args = [a for c in args.config for a in ("-c", c)] + overrides
    cli = MSDMLightningCLI(
        model_class=LightningModule, datamodule_class=LightningDataModule,
        subclass_mode_model=True, subclass_mode_data=True, run=False, args=cli_args,
        parser_kwargs={"default_config_files": default_config_files(cli_args)}, save_config_callback=None,
    )
    model, dm = cli.model, cli.datamodule
    if not hasattr(model, "fill_cache") or model.hparams.get("cache_dir") is None:
        print("msdm cache: the model must be a MSDMUNetModule with cache_dir set "
              "(-- --model.init_args.cache_dir=DIR)")
        return 2
    env_rank, env_world, local_rank = env_rank_world()
    rank = env_rank if args.rank is None else args.rank
    world = env_world if args.world_size is None else args.world_size
    device = args.device or (f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    model.to(device)
    model.cache = model.build_cache(datamodule=dm, rank=rank)
    dm.setup("fit")
    loaders = {}
    for split in args.splits:
        fn = getattr(dm, f"{split}_dataloader", None)
        loader = fn() if fn is not None else None
        if isinstance(loader, (list, tuple)):
            loader = loader[0] if loader else None
        if loader is not None:
            loaders[split] = loader
    t0 = time.perf_counter()
    stats = model.fill_cache(loaders, rank=rank, world_size=world, shard_by_id=world > 1,
                             scheme="hash" if world > 1 else "single", max_batches=args.max_batches)
    dt = time.perf_counter() - t0
    cache = model.cache
    print(f"msdm cache (rank {rank}/{world}, {device}) in {dt:.1f} s: {stats}")
    print(f"  latents: {cache.latents.directory}  ({len(cache.latents)} entries)")
    print(f"  text:    {cache.text.directory}  ({len(cache.text)} entries)")
    return 0
