"""The per-step hooks every weight-averaging generator module shares (``MSDMVAEModule``, ``MSDMUNetModule``)."""

from __future__ import annotations

from lightning_modules.guards import reseed_for_step


class ReseedAndAverage:
    """LightningModule mixin: reseed the RNGs at each training step's start (exact resume,
    :func:`~lightning_modules.guards.reseed_for_step`) and update ``self.ema`` (or nothing when ``None``) after
    each optimizer step."""

    def on_train_batch_start(self, batch, batch_idx):
        reseed_for_step(self, batch_idx)

    def optimizer_step(self, *args, **kwargs):
        # The EMA follows each optimizer step (not each micro-batch under gradient accumulation), and is updated
        # before any callback's on_train_batch_end: a checkpoint written there (every_n_train_steps, preemption)
        # then holds the average that matches its weights, so a resumed run continues it exactly.
        super().optimizer_step(*args, **kwargs)
        if self.ema is not None:
            self.ema.update()
