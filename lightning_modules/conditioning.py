"""``ConditioningDiagnostic``: log how much the prompt moves the U-Net's prediction while training.

A thin shell around :func:`msdm.metrics.conditioning.prompt_sensitivity` (see there for the definitions). It works
with any module exposing the MSDM U-Net protocol (``unet``, ``scheduler``, ``encode_prompts``, ``batch_latents``,
optional ``ema``): :class:`~lightning_modules.unet_module.MSDMUNetModule`.
"""

from __future__ import annotations

from contextlib import nullcontext

import lightning.pytorch as pl
import torch

from msdm.metrics.conditioning import DEFAULT_TIMESTEPS, prompt_sensitivity


class ConditioningDiagnostic(pl.Callback):
    """Every ``every_n_steps`` training steps (and at validation end), log ``cond/vs_uncond`` and
    ``cond/between_prompts`` (relative L2 differences of ε-predictions; per timestep as ``cond/vs_uncond@t``).

    The latents are the posterior means of the first ``num_latents`` images of the first training batch seen, kept
    for the whole run together with a fixed noise draw, so the curve compares like with like. The EMA weights are
    measured when the module keeps them (they are what samples). Prompts default to the module's ``sample_prompts``,
    then the DataModule's ``validation_prompts``; at least two are needed.
    """

    def __init__(self, prompts: list[str] | None = None, every_n_steps: int | None = 200, on_validation: bool = True,
                 timesteps: tuple[int, ...] = DEFAULT_TIMESTEPS, num_latents: int = 8, seed: int = 0):
        self.prompts = list(prompts) if prompts else None
        self.every = every_n_steps
        self.on_validation = on_validation
        self.timesteps = tuple(int(t) for t in timesteps)
        self.num_latents = num_latents
        self.seed = seed
        self._latents: torch.Tensor | None = None
        self.last: dict[str, float] = {}  # the latest values (for notebooks and tests)

    def _prompts(self, trainer, pl_module) -> list[str]:
        dm = getattr(trainer, "datamodule", None)
        return (self.prompts or list(getattr(pl_module, "sample_prompts", []) or [])
                or list(getattr(dm, "validation_prompts", []) or []))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._latents is None and "pixel_values" in batch:
            n = self.num_latents
            head = {k: v[:n] if isinstance(v, (torch.Tensor, list, tuple)) else v for k, v in batch.items()}
            self._latents = pl_module.batch_latents(head, "train", sample=False).detach().clone()
        if self.every and trainer.global_step % self.every == 0:
            self._measure(trainer, pl_module)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if self.on_validation and not trainer.sanity_checking:
            self._measure(trainer, pl_module)

    @torch.no_grad()
    def _measure(self, trainer, pl_module) -> None:
        prompts = self._prompts(trainer, pl_module)
        if self._latents is None or len(prompts) < 2:
            return
        unet = pl_module.unet
        was_training = unet.training
        unet.eval()  # no dropout: the measure must not be noisy
        ema = getattr(pl_module, "ema", None)
        try:
            with ema.swapped_in() if ema is not None else nullcontext():
                values = prompt_sensitivity(unet, self._latents.to(pl_module.device), pl_module.encode_prompts,
                                            prompts, pl_module.scheduler, self.timesteps, self.seed)
        finally:
            unet.train(was_training)
        self.last = values
        # Straight to the loggers (rank zero; they are rank_zero_only): allowed from any hook, no cross-rank sync
        # needed for a diagnostic, and logged at the optimizer step it describes.
        for logger in trainer.loggers:
            logger.log_metrics({f"cond/{k}": v for k, v in values.items()}, step=trainer.global_step)
