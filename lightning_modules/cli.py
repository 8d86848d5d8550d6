"""``msdm fit | validate | test | predict``: LightningCLI in subclass mode for model and data.

Without ``-c``, the config is ``cli.yaml``: the one in the current directory if there is one, else the repository's
(``MSDM_CLI_CONFIG`` overrides both). With ``-c configs/<experiment>.yaml`` that file alone (plus later ``-c``
overlays and ``--model.*`` / ``--data.*`` / ``--trainer.*`` flags) is the config: LightningCLI would merge its default
config files *under* every ``-c`` file, so values of ``cli.yaml`` (its seed, ``max_epochs``, its DataModule's
arguments) leaked into every experiment that did not override them. E.g.::

    msdm fit -c configs/msdm_unet_kvasir.yaml --trainer.devices=4 --trainer.strategy=ddp

The Trainer gets :class:`~lightning_modules.progress_bar.MSDMProgressBar` (no ``v_num`` entry) unless the config
names its own progress bar or turns the bar off.

``--ckpt_path last`` resumes the newest run of the same experiment (:mod:`lightning_modules.resume`): the newest
``version_N`` of the config's logger that holds a ``last`` checkpoint, logging into that same version; it fails when
there is none. ``--ckpt_path auto`` does the same but starts a new run when there is none (for requeued jobs).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningCLI


def has_config_arg(argv: list[str] | None) -> bool:
    """Whether the command line names a config file (``-c`` / ``--config``)."""
    return any(a in ("-c", "--config") or a.startswith(("--config=", "-c=")) for a in (argv or []))


def default_config_files(argv: list[str] | None = None) -> list[str]:
    """``[cli.yaml]`` when no ``-c`` is given, else ``[]`` (module docstring)."""
    if has_config_arg(argv):
        return []
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
    def before_instantiate_classes(self) -> None:
        sub = self.config.get("subcommand")
        # msdm predict writes images as they come (ChallengeImageWriter): do not also keep them all in memory
        if sub == "predict" and self.config[sub].get("return_predictions") is None:
            self.config[sub].return_predictions = False

    def instantiate_trainer(self, **kwargs):
        from lightning.pytorch.callbacks import BasePredictionWriter

        trainer = super().instantiate_trainer(**kwargs)
        if self.subcommand == "predict" and not any(isinstance(c, BasePredictionWriter) for c in trainer.callbacks):
            from lightning_modules.callbacks.prediction import ChallengeImageWriter

            trainer.callbacks.append(ChallengeImageWriter())  # images in the challenge layout, with provenance
        return trainer

    def _parse_ckpt_path(self) -> None:
        """Re-parse a checkpoint's hyper-parameters as Lightning does, also for checkpoints written outside the CLI.

        In subclass mode Lightning expects the checkpoint to name its class (``_class_path``, which only CLI runs
        store); a checkpoint saved from a notebook or a plain ``Trainer`` lacks it and ``msdm test --ckpt_path``
        failed with "Option 'preset' is not accepted". The class given in the config (``-c`` / ``--model``) names it.
        """
        import sys

        import torch

        from lightning_modules.resume import resolve_ckpt_keyword

        sub = self.config.get("subcommand")
        if sub:
            resolve_ckpt_keyword(self.config[sub], sub)  # "last" / "auto" -> a file (or None), logger version pinned
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


SUBCOMMANDS = ("fit", "validate", "test", "predict")


def cli_kwargs(argv: list[str] | None) -> dict:
    """The ``LightningCLI`` arguments ``msdm`` uses for this command line (default config only without ``-c``)."""
    files = default_config_files(argv)
    return dict(
        model_class=LightningModule,
        datamodule_class=LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        parser_kwargs={sub: {"default_config_files": files} for sub in SUBCOMMANDS},
        save_config_kwargs={"overwrite": True},
    )


def run_lightning_cli(argv: list[str] | None = None, run: bool = True) -> MSDMLightningCLI:
    import sys

    argv = sys.argv[1:] if argv is None else argv
    return MSDMLightningCLI(**cli_kwargs(argv), args=argv, run=run)
