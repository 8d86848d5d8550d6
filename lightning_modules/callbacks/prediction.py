"""``ChallengeImageWriter``: ``msdm predict``'s images in the challenge layout with provenance.

Batches come from :class:`datamodules.prompts.PromptDataModule` (one item per image, with its prompt, indices and
seed ``image_seed + k``); the module's ``predict_step`` asks for exactly those images (``generate_with_seeds``), so
an image does not depend on the batch or the rank that made it. The writer is the one challenge-folder writer of
:mod:`msdm.generators.writer` (``msdm generate`` and ``msdm utility`` use it too): each batch is written as it comes,
each rank records its files, and when every rank is done rank 0 writes ``prompts.json`` and ``provenance.json``.
``msdm predict`` adds this callback when the config has none.
"""

from __future__ import annotations

import os
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.callbacks import BasePredictionWriter

from msdm.generators.writer import ChallengeFolderWriter, folder_generation

SEED_RULE = "image k (0-based, prompt-major) uses image_seed + k"


class ChallengeImageWriter(BasePredictionWriter):
    """Write predicted images in the challenge layout with provenance (module docstring).

    Args:
        out: output folder (default: the DataModule's ``out``).
    """

    def __init__(self, out: str | None = None):
        super().__init__(write_interval="batch")
        self.out_arg = out
        self.out: Path | None = None
        self._writer: ChallengeFolderWriter | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "predict":
            return
        out = self.out_arg or getattr(trainer.datamodule, "out", None)
        if out is None:
            raise ValueError("ChallengeImageWriter: no output folder: pass out= or use PromptDataModule(out=...)")
        self.out = Path(out)
        info = pl_module.generation_info() if hasattr(pl_module, "generation_info") else {}
        ckpt = trainer.ckpt_path
        # the checkpoint's file name, never a local path (as msdm generate records the pipeline folder's name)
        info = {**info, **({"checkpoint": Path(ckpt).name} if ckpt else {}), "seed_rule": SEED_RULE}
        self._writer = ChallengeFolderWriter(self.out, info, trainer.global_rank, trainer.world_size)

    @property
    def _info(self) -> dict:
        return self._writer.info if self._writer is not None else {}

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx,
                           dataloader_idx=0) -> None:
        self._writer.write_images(prediction["prompt_index"], prediction["image_index"], prediction["prompt"],
                                  prediction["seed"], prediction["images"])

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        dm = trainer.datamodule
        self._writer.close()
        trainer.strategy.barrier("ChallengeImageWriter")  # every rank's images and records are on disk
        if trainer.is_global_zero:
            prompts = list(getattr(dm, "prompts", []))
            self._writer.finish(prompts, folder_generation(self._info, getattr(dm, "image_seed", None),
                                                           getattr(dm, "num_images_per_prompt", None), prompts))
            n = sum(1 for k in os.listdir(self.out) if k.endswith(".png"))
            print(f"msdm predict: {n} images in {self.out} (prompts.json, provenance.json; check with "
                  f"`msdm provenance {self.out}`)")
