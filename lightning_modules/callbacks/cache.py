"""``FrozenOutputCache``: fill and flush the latent + text cache of ``MSDMUNetModule`` around training.

The cache (:class:`msdm.cache.training.TrainingCache`; VAE posteriors by sample id, text states by caption) lets
stage 2 train without the frozen VAE and text encoder in memory. The module adds this callback itself
(``configure_callbacks``) when it has a ``cache_dir``; it uses public hooks only:

* at the sanity check's validation start, the validation split is filled from ``trainer.val_dataloaders`` (so the
  sanity check already reads the cache: with ``cache_on_miss="error"`` it would otherwise fail);
* at ``on_train_start`` — Lightning has built (and, on resume, restored) the loaders it trains from, sharded over
  ranks — the training split (``cache_variants`` / ``cache_text_epochs`` passes) and, if not done yet, the
  validation split are filled from ``trainer.train_dataloader`` / ``trainer.val_dataloaders``: each rank encodes
  what its own loader yields. The fill pass creates its own iterators, after Lightning bound the resumed position to
  its iterator, so a mid-epoch resume continues exactly. Then every rank waits for the others, re-reads the entries
  they wrote, and the frozen parts are dropped: training reads only the cache;
* at each epoch end and at the end of fit, the stores are flushed.

``cache_precompute=False`` skips the fill (misses are then encoded on first use, or raise with
``cache_on_miss="error"``); a split whose completion markers say it is filled is skipped (``msdm cache`` filled it).
"""

from __future__ import annotations

import lightning.pytorch as pl

__all__ = ["FrozenOutputCache"]


def _first(loaders):
    return loaders[0] if isinstance(loaders, (list, tuple)) else loaders


class FrozenOutputCache(pl.Callback):
    """Fill the module's cache before it is read, flush it after (module docstring)."""

    def __init__(self):
        self._filled: set[str] = set()

    def _active(self, pl_module) -> bool:
        return getattr(pl_module, "cache", None) is not None and bool(pl_module.hparams.get("cache_precompute", True))

    def _fill(self, trainer: pl.Trainer, pl_module, loaders: dict) -> None:
        from msdm.cache.fill import sized_len

        loaders = {k: v for k, v in loaders.items() if v is not None and k not in self._filled}
        if not loaders:
            return
        max_batches = None
        if "train" in loaders:
            limit, train_len = trainer.num_training_batches, sized_len(loaders["train"])
            if limit != float("inf") and train_len is not None and limit < train_len:
                max_batches = int(limit)
        scheme = "ddp" if trainer.world_size > 1 else "single"
        # the empty caption (CFG dropout) and the sample prompts are encoded by every rank; fill_cache does it
        pl_module.fill_cache(loaders, rank=trainer.global_rank, world_size=trainer.world_size, scheme=scheme,
                             max_batches=max_batches)
        self._filled |= set(loaders)
        if trainer.world_size > 1:
            trainer.strategy.barrier("msdm-cache-filled")
        pl_module.cache.refresh()  # entries other ranks wrote

    def on_validation_start(self, trainer: pl.Trainer, pl_module) -> None:
        if trainer.sanity_checking and self._active(pl_module):
            self._fill(trainer, pl_module, {"val": _first(trainer.val_dataloaders)})

    def on_train_start(self, trainer: pl.Trainer, pl_module) -> None:
        if not self._active(pl_module):
            return
        loaders = {"train": trainer.train_dataloader}
        if trainer.enable_validation:
            loaders["val"] = _first(trainer.val_dataloaders)
        self._fill(trainer, pl_module, loaders)
        pl_module.release_frozen()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module) -> None:
        if getattr(pl_module, "cache", None) is not None:
            pl_module.cache.flush()

    def on_fit_end(self, trainer: pl.Trainer, pl_module) -> None:
        if getattr(pl_module, "cache", None) is not None:
            pl_module.cache.flush()

    def state_dict(self) -> dict:
        return {}
