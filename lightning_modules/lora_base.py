"""What the LoRA LightningModules share: LoRA-only checkpoints, the optimizer, per-step noise seeds, LoRA export.

Checkpoint policy (docs/CONVENTIONS.md): a checkpoint holds what trains — the LoRA weights — plus the optimizer
state, never the frozen base (2 B parameters for Kandinsky, 12 B for FLUX). ``state_dict`` keeps only ``lora_``
entries; ``strict_loading = False`` lets Lightning load that partial dict, and :meth:`load_state_dict` still
refuses a checkpoint that lacks any LoRA weight this module has (a silently half-restored adapter would be worse
than an error).

Exact resume: every training step draws its noise and timesteps from a generator seeded by
``(noise_seed, global step, micro-batch, rank)`` (:func:`lightning_modules.guards.step_keys`), and the global RNGs are
reseeded from the same keys for anything else, so a run resumed from any checkpoint — mid-epoch included, with the
resumable training loader of the DataModules — draws what the uninterrupted run drew.
"""

from __future__ import annotations

import contextlib
import os
from collections import OrderedDict
from pathlib import Path

import lightning as L
import torch

from lightning_modules.guards import ensure_finite, register_gloo_teardown, reseed_for_step, step_keys
from lightning_modules.prediction import predict_step
from msdm.data import rng


def _is_lora_key(name: str) -> bool:
    return "lora_" in name


class LoRAModuleBase(L.LightningModule):
    """Base of :class:`~lightning_modules.kandinsky_lora.KandinskyLoRAModule` and
    :class:`~lightning_modules.flux_lora.FluxLoRAModule`. Subclasses set ``self.lora_model`` (the model carrying
    the adapter), list their frozen helper modules in :meth:`frozen_modules`, and implement :meth:`loss`,
    :meth:`save_lora`, ``generate`` and ``generation_info``."""

    # Lightning loads the LoRA-only state dict without complaining about the (absent) frozen base.
    strict_loading = False

    # ------------------------------------------------------------------ subclass API
    def frozen_modules(self) -> list[torch.nn.Module]:
        """Frozen helper modules (encoders, VAE) that must stay in eval mode while training."""
        return []

    def loss(self, batch: dict, generator: torch.Generator | None) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def save_lora(self, directory: str) -> Path:  # pragma: no cover - abstract
        raise NotImplementedError

    # ------------------------------------------------------------------ what trains
    def lora_parameters(self) -> list[torch.nn.Parameter]:
        return [p for n, p in self.named_parameters() if _is_lora_key(n)]

    def train(self, mode: bool = True):
        super().train(mode)
        # Frozen encoders stay in eval mode (T5 and CLIP have dropout) whatever Lightning asks of the module.
        for m in self.frozen_modules():
            m.eval()
        return self

    # ------------------------------------------------------------------ checkpoints hold only LoRA weights
    def state_dict(self, *args, destination=None, prefix: str = "", keep_vars: bool = False):
        full = super().state_dict(*args, prefix=prefix, keep_vars=keep_vars)
        out = OrderedDict((k, v) for k, v in full.items() if _is_lora_key(k))
        if destination is not None:
            destination.update(out)
            return destination
        return out

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        expected = {k for k in super().state_dict() if _is_lora_key(k)}
        missing = sorted(expected - set(state_dict))
        if missing:
            raise RuntimeError(
                f"checkpoint lacks {len(missing)} of the {len(expected)} LoRA weights of this module (first: "
                f"{missing[0]}); was it trained with other targets or rank? (hparams: rank, target_modules)"
            )
        unexpected = sorted(k for k in state_dict if k not in expected)
        if unexpected and strict and self.strict_loading:
            raise RuntimeError(f"unexpected keys in LoRA checkpoint: {unexpected[:5]}")
        return super().load_state_dict(state_dict, strict=False, assign=assign)

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self):
        hp = self.hparams
        opt = torch.optim.AdamW(
            self.lora_parameters(), lr=hp.learning_rate, betas=(hp.adam_beta1, hp.adam_beta2),
            weight_decay=hp.adam_weight_decay, eps=hp.adam_epsilon,
        )
        if not hp.lr_warmup_steps:
            return opt
        warm = int(hp.lr_warmup_steps)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / warm))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def base_seed(self) -> int:
        """``hparams.noise_seed``, else the run's ``seed_everything`` value, else 0."""
        seed = self.hparams.get("noise_seed")
        return int(seed if seed is not None else os.environ.get("PL_GLOBAL_SEED", 0))

    def step_generator(self, purpose: str, *parts: int) -> torch.Generator:
        """A generator on this module's device seeded by ``(base_seed, purpose, *parts)`` — never by global RNG state."""
        return rng.generator(self.base_seed(), purpose, *parts, device=self.device)

    def setup(self, stage: str) -> None:
        register_gloo_teardown()

    def on_train_batch_start(self, batch, batch_idx):
        reseed_for_step(self, batch_idx, seed=self.base_seed())  # draws without a generator (e.g. LoRA dropout)

    def training_step(self, batch, batch_idx):
        gen = self.step_generator("lora-train", *step_keys(self, batch_idx))
        loss = self.loss(batch, gen)
        ensure_finite(self, loss)  # a NaN/inf loss stops the run before the optimizer step, naming the step
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["caption"]))
        return loss

    def validation_step(self, batch, batch_idx):
        # The same noise at every validation: the curve then moves only because the weights do.
        gen = self.step_generator("lora-val", batch_idx, self.global_rank)
        loss = self.loss(batch, gen)
        self.log("val/loss", loss, prog_bar=True, sync_dist=True, batch_size=len(batch["caption"]))
        return loss

    # ------------------------------------------------------------------ msdm predict
    @torch.no_grad()
    def generate_with_seeds(self, prompts: list[str], seeds: list[int], **sampling) -> torch.Tensor:
        """Image ``i`` for ``prompts[i]`` with seed ``seeds[i]`` (``msdm predict``): one ``generate`` call per image, as
        the stock pipelines draw a whole batch from one generator."""
        return torch.cat([self.generate([p], 1, seed=int(s), **dict(sampling)) for p, s in zip(prompts, seeds)])

    def predict_step(self, batch, batch_idx, dataloader_idx=0):
        return predict_step(self, batch)  # PromptDataModule batches -> images (lightning_modules/prediction.py)

    # ------------------------------------------------------------------ LoRA export at the end of fit
    def lora_export_dir(self) -> Path | None:
        """Where :meth:`on_train_end` writes the LoRA folder: ``hparams.lora_output_dir`` or ``<log_dir>/lora``."""
        hp = self.hparams
        if hp.get("lora_output_dir"):
            return Path(hp.lora_output_dir)
        if self._trainer is None:
            return None
        root = self.trainer.log_dir or self.trainer.default_root_dir
        return Path(root) / "lora"

    def on_train_end(self):
        if not self.hparams.get("export_lora", True):
            return
        out = self.lora_export_dir()
        if out is not None and self.trainer.is_global_zero:
            self.save_lora(str(out))


@contextlib.contextmanager
def visiting(modules: list[torch.nn.Module], device: torch.device, stay: bool = False):
    """Move ``modules`` to ``device`` for the block, then back to where they were (unless ``stay``).

    Frozen encoders that are needed only on cache misses live on the CPU and visit the GPU only then.
    """
    homes = []
    for m in modules:
        p = next(m.parameters(), None)
        homes.append(p.device if p is not None else torch.device("cpu"))
        m.to(device)
    try:
        yield
    finally:
        if not stay:
            for m, home in zip(modules, homes):
                m.to(home)
