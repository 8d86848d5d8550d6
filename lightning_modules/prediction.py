"""``msdm predict``: ``predict_step`` of every generator and the writer of the challenge layout.

Batches come from :class:`datamodules.prompts.PromptDataModule`: one item per image, with its prompt, indices and
seed (``image_seed + k``). :func:`predict_step` asks the module for exactly those images
(``generate_with_seeds(prompts, seeds)``), so an image does not depend on the batch or the rank that made it.
:class:`ChallengeImageWriter` writes each batch as it comes — ``prompt{p:04d}_img{i:04d}.png`` with the provenance
record of ``msdm generate`` (msdm/provenance.py) — records the rank's files in a hidden
``.provenance-rRofW.json``, and when every rank is done writes ``prompts.json`` and ``provenance.json``
(msdm/generation.py, shared with ``msdm generate``). ``msdm predict`` adds the writer when the config has none.
"""

from __future__ import annotations

import os
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.callbacks import BasePredictionWriter

__all__ = ["ChallengeImageWriter", "predict_step"]

SEED_RULE = "image k (0-based, prompt-major) uses image_seed + k"


def predict_step(module, batch: dict) -> dict:
    """``{**batch, "images": float [B, 3, H, W] in [0, 1]}`` for a PromptDataModule batch."""
    if "prompt" not in batch or "seed" not in batch:
        raise ValueError(f"{type(module).__name__}.predict_step generates images from prompts: use "
                         "--data PromptDataModule --data.prompts FILE (datamodules/prompts.py)")
    images = module.generate_with_seeds(list(batch["prompt"]), [int(s) for s in batch["seed"]])
    return {**batch, "images": images}


class ChallengeImageWriter(BasePredictionWriter):
    """Write predicted images in the challenge layout with provenance (module docstring).

    Args:
        out: output folder (default: the DataModule's ``out``).
    """

    def __init__(self, out: str | None = None):
        super().__init__(write_interval="batch")
        self.out_arg = out
        self.out: Path | None = None
        self._entries: dict = {}
        self._info: dict = {}

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "predict":
            return
        dm = trainer.datamodule
        out = self.out_arg or getattr(dm, "out", None)
        if out is None:
            raise ValueError("ChallengeImageWriter: no output folder: pass out= or use PromptDataModule(out=...)")
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self._entries = {}
        info = pl_module.generation_info() if hasattr(pl_module, "generation_info") else {}
        ckpt = trainer.ckpt_path
        # the checkpoint's file name, never a local path (as msdm generate records the pipeline folder's name)
        self._info = {**info, **({"checkpoint": Path(ckpt).name} if ckpt else {}), "seed_rule": SEED_RULE}

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx,
                           dataloader_idx=0) -> None:
        from msdm.pipeline import images_to_uint8
        from msdm.prompts import challenge_filename
        from msdm.provenance import make_record, save_png

        arrays = images_to_uint8(prediction["images"])
        for text, p, i, seed, arr in zip(prediction["prompt"], prediction["prompt_index"],
                                         prediction["image_index"], prediction["seed"], arrays):
            name = challenge_filename(int(p) + 1, int(i) + 1)
            record = make_record(text, int(seed), self._info, prompt_index=int(p) + 1, image_index=int(i) + 1)
            self._entries[name] = save_png(arr, self.out / name, record)

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        from msdm.generation import finish_sharded_output, shard_record_path
        from msdm.io import write_json

        dm = trainer.datamodule
        rank, world = trainer.global_rank, trainer.world_size
        write_json(shard_record_path(self.out, rank, world), self._entries)
        trainer.strategy.barrier("ChallengeImageWriter")  # every rank's images and records are on disk
        if trainer.is_global_zero:
            generation = {**self._info, "seed": getattr(dm, "image_seed", None),
                          "num_images_per_prompt": getattr(dm, "num_images_per_prompt", None),
                          "num_prompts": len(getattr(dm, "prompts", [])), "synthetic": True}
            finish_sharded_output(self.out, list(getattr(dm, "prompts", [])), world, generation)
            n = sum(1 for k in os.listdir(self.out) if k.endswith(".png"))
            print(f"msdm predict: {n} images in {self.out} (prompts.json, provenance.json; check with "
                  f"`msdm provenance {self.out}`)")
