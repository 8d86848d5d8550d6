"""``msdm fit | validate | test | predict``: LightningCLI in subclass mode for model and data.

The default config is ``cli.yaml``: the one in the current directory if there is one, else the repository's
(``MSDM_CLI_CONFIG`` overrides both). ``-c configs/<experiment>.yaml`` and ``--model.*`` / ``--data.*`` /
``--trainer.*`` flags override it, e.g.::

    msdm fit -c configs/msdm_unet_kvasir.yaml --trainer.devices=4 --trainer.strategy=ddp
"""

from __future__ import annotations

import os
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
