"""``msdm fit | validate | test | predict``: LightningCLI in subclass mode for model and data.

The default config is ``cli.yaml``: the one in the current directory if there is one, else the repository's
(``MSDM_CLI_CONFIG`` overrides both). ``-c configs/<experiment>.yaml`` and ``--model.*`` / ``--data.*`` /
``--trainer.*`` flags override it, e.g.::

    msdm fit -c configs/msdm_unet_kvasir.yaml --trainer.devices=4 --trainer.strategy=ddp

The Trainer gets :class:`~lightning_modules.progress_bar.MSDMProgressBar` (no ``v_num`` entry) unless the config
names its own progress bar or turns the bar off.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningCLI


def default_config_files() -> list[str]:
    env = os.environ.get("MSDM_CLI_CONFIG")
    if env:
        return [env]
    for candidate in (Path.cwd() / "cli.yaml", Path(__file__).resolve().parent.parent / "cli.yaml"):
        if candidate.is_file():
            return [str(candidate)]
    return []


class MSDMLightningCLI(LightningCLI):
    """LightningCLI with msdm's packages registered, so ``--model MSDMUNetModule`` and
    ``--data KvasirVQADataModule`` resolve without a full ``class_path``."""

    def __init__(self, *args, **kwargs):
        import datamodules  # noqa: F401 - registers the DataModule subclasses
        import lightning_modules  # noqa: F401 - registers the LightningModule subclasses

        super().__init__(*args, **kwargs)

    def parse_arguments(self, parser, args) -> None:
        """``args`` is the command line here (``msdm fit ...`` hands its own argv over, ``msdm cache`` its overrides):
        hide ``sys.argv`` while parsing, or Lightning warns on every run that both were given."""
        if args is None or len(sys.argv) <= 1:
            return super().parse_arguments(parser, args)
        argv, sys.argv = sys.argv, sys.argv[:1]
        try:
            return super().parse_arguments(parser, args)
        finally:
            sys.argv = argv

    def _instantiate_trainer(self, config, callbacks):
        from lightning.pytorch.callbacks import ProgressBar

        from lightning_modules.progress_bar import MSDMProgressBar

        own = config.get("callbacks") or []
        given = list(callbacks) + (list(own) if isinstance(own, (list, tuple)) else [own])
        if config.get("enable_progress_bar", True) is not False and not any(isinstance(c, ProgressBar) for c in given):
            callbacks = [*callbacks, MSDMProgressBar()]
        return super()._instantiate_trainer(config, callbacks)

    def _parse_ckpt_path(self) -> None:
        """Re-parse a checkpoint's hyper-parameters as Lightning does, also for checkpoints written outside the CLI.

        In subclass mode Lightning expects the checkpoint to name its class (``_class_path``, which only CLI runs
        store); a checkpoint saved from a notebook or a plain ``Trainer`` lacks it and ``msdm test --ckpt_path``
        failed with "Option 'preset' is not accepted". The class given in the config (``-c`` / ``--model``) names it.
        """
        import sys

        import torch

        sub = self.config.get("subcommand")
        ckpt_path = self.config[sub].get("ckpt_path") if sub else None
        if not (ckpt_path and Path(ckpt_path).is_file()):
            return
        hparams = torch.load(ckpt_path, weights_only=True, map_location="cpu").get("hyper_parameters", {})
        hparams.pop("_instantiator", None)
        if not hparams:
            return
        class_path = hparams.pop("_class_path", None) or self.config[sub].get("model", {}).get("class_path")
        if class_path is None:
            raise ValueError(f"{ckpt_path} does not name its LightningModule class: pass --model or -c with a config")
        model = {"class_path": class_path, "init_args": hparams}
        try:
            self.config = self.parser.parse_object({sub: {"model": model}}, self.config)
        except SystemExit:
            sys.stderr.write("Parsing of ckpt_path hyperparameters failed!\n")
            raise


def run_lightning_cli(argv: list[str] | None = None, run: bool = True) -> MSDMLightningCLI:
    files = default_config_files()
    parser_kwargs = {sub: {"default_config_files": files} for sub in ("fit", "validate", "test", "predict")}
    return MSDMLightningCLI(
        model_class=LightningModule,
        datamodule_class=LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        parser_kwargs=parser_kwargs,
        save_config_kwargs={"overwrite": True},
        args=argv,
        run=run,
    )
