"""``MSDMUNetModule``: stage 2 of MSDM, the text-conditioned latent U-Net, as a thin LightningModule.

Wiring only: the steps, the optimizer, the checkpoint policy and the hooks. The machinery — the U-Net from a preset,
the frozen VAE and text encoder (frozen before DDP wraps anything, never stored in checkpoints: ``on_save_checkpoint``
drops them, ``on_load_checkpoint`` puts the live frozen weights back so strict loading still checks every U-Net key),
latent scaling, the losses, the latent + text cache reads, the EMA and sampling — is
:class:`msdm.training.stage2.Stage2`, usable without a Trainer. With ``cache_dir`` set the frozen parts are not even
loaded (they load on first use: a cache miss, a sample grid, ``generate``, ``export``) and the
:class:`~lightning_modules.callbacks.cache.FrozenOutputCache` callback fills the cache before training.
"""

from __future__ import annotations

import lightning.pytorch as pl
import torch

from lightning_modules.guards import ensure_finite, register_gloo_teardown
from lightning_modules.prediction import predict_step
from lightning_modules.steps import ReseedAndAverage
from lightning_modules.weights_info import remember_checkpoint, weights_revision
from msdm.diffusion import REFERENCE_STEPS
from msdm.models.loading import EMBEDDED_VAE, checkpoint_vae_source, embed_vae, load_vae
from msdm.models.text_encoder import PAPER_TEXT_ENCODER
from msdm.training.stage2 import CACHE_ON_MISS, Stage2  # noqa: F401 - CACHE_ON_MISS re-exported


class MSDMUNetModule(ReseedAndAverage, Stage2, pl.LightningModule):
    """Train the MSDM U-Net on VAE latents with a frozen text encoder (Prompt to Polyp §4.2.1, stage 2).

    Args:
        preset: ``paper`` | ``small`` | ``tiny``.
        vae: trained VAE — a ``MSDMVAEModule`` checkpoint, a VAE folder or a pipeline folder (``None``: untrained,
            debugging only).
        text_encoder: hub id or local folder of a transformers text model (``builtin:all-MiniLM-L6-v2``: offline);
            ``max_length``: tokens (64 as the reference); ``text_chunking``: ``none`` (whole prompts, the paper) or
            ``sentence`` (sentence by sentence, for captions that join several facts; exported pipelines match).
        latent_scaling: multiply VAE latents by this (``None``: the VAE's ``scaling_factor``, 1.0 = the reference;
            ``"auto"``: 1/std of the first training batch's latents over ranks, saved in checkpoint and pipeline).
        lr, weight_decay, betas, lr_warmup_steps: AdamW (lr 1e-4 as the reference) with linear warm-up.
        loss_type: ``l1`` (reference) or ``mse``. cfg_dropout: per-sample empty-prompt rate (0.2).
        prediction_type (``epsilon`` as the reference, or ``v_prediction``), zero_terminal_snr, snr_gamma
            (min-SNR-γ weights), snr_offset (their x₀-weight offset, :func:`msdm.diffusion.min_snr_weights`),
            scheduler_overrides (DDPMScheduler config keys, e.g. ``beta_start``/``beta_end``; saved in exports): the noise process and loss weighting (:mod:`msdm.diffusion`; msdm's recipe for real
            frames, :mod:`msdm.training.recipes`, uses v, zero terminal SNR and γ = 5).
        ema_decay: EMA of the U-Net weights (None = off); used for sampling and export when on.
        autoguidance: a fraction of training in (0, 1): the sampling weights at that step (EMA when on) become a
            frozen weaker U-Net, and sampling guides with it instead of the unconditional branch (Karras et al. 2024;
            ``guidance_scale`` is then autoguidance's weight); saved in checkpoints and exported pipelines
            (``guide_unet``). None (default) = classifier-free guidance.
        sampler, num_inference_steps, guidance_scale, eta: sampling defaults (DDIM-150, η = 1, 4.5 in diffusers'
            guidance convention = the reference's 3.5; samplers: :mod:`msdm.generators.samplers`); guidance_interval:
            guide only at training timesteps in [lo, hi] (:class:`~msdm.pipeline.MSDMPipeline`, saved with exports).
        sample_prompts: prompts of sample grids and metric callbacks. image_size: side of generated images
            (default: the preset's; not ``resolution``, which the DataModules own).
        unet_overrides: extra :class:`~msdm.models.unet.MSDMUNet` kwargs. gradient_checkpointing: recompute
            activations in backward. text_cache_size: distinct captions memoised in memory (0 = off).
        local_files_only / trust_remote_code: the text encoder loader's hub policy.
        frozen_dtype: dtype of the frozen VAE and text encoder (with ``--trainer.precision=bf16-mixed``);
            channels_last, torch_compile, compile_mode, compile_backend, fused_optimizer (None = on for GPU
            weights): speed options (docs/scaling.md, docs/benchmarks.md).
        cache_dir: latent + text cache folder (``"memory"``: in RAM; training then never loads the VAE and text
            encoder); cache_variants: augmentation variants per image; cache_text_epochs: epochs whose captions are
            encoded; cache_precompute: fill before training; cache_on_miss: ``encode`` or ``error``; cache_tag: extra
            fingerprint part; cache_dtype: storage dtype; cache_memory_gb: RAM per store (docs/scaling.md).
    """

    def __init__(
        self,
        preset: str = "paper",
        vae: str | None = None,
        text_encoder: str = PAPER_TEXT_ENCODER,
        max_length: int = 64,
        text_chunking: str = "none",
        latent_scaling: float | str | None = None,
        lr: float = 1e-4,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        lr_warmup_steps: int = 0,
        loss_type: str = "l1",
        cfg_dropout: float = 0.2,
        prediction_type: str = "epsilon",
        zero_terminal_snr: bool = False,
        snr_gamma: float | None = None,
        snr_offset: float | None = None,
        scheduler_overrides: dict | None = None,
        ema_decay: float | None = None,
        sampler: str = "ddim",
        num_inference_steps: int = REFERENCE_STEPS,
        guidance_scale: float = 4.5,
        guidance_interval: tuple[float, float] | None = None,
        autoguidance: float | None = None,
        eta: float = 1.0,
        sample_prompts: list[str] | None = None,
        image_size: int | None = None,
        unet_overrides: dict | None = None,
        gradient_checkpointing: bool = False,
        text_cache_size: int = 4096,
        local_files_only: bool | None = None,
        trust_remote_code: bool = False,
        frozen_dtype: str | None = None,
        channels_last: bool = False,
        torch_compile: bool = False,
        compile_mode: str | None = None,
        compile_backend: str = "inductor",
        fused_optimizer: bool | None = None,
        cache_dir: str | None = None,
        cache_variants: int = 1,
        cache_text_epochs: int = 1,
        cache_precompute: bool = True,
        cache_on_miss: str = "encode",
        cache_tag: str | None = None,
        cache_dtype: str | None = None,
        cache_memory_gb: float = 2.0,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.init_stage2()

    # --------------------------------------------------------------- hooks of Stage2
    def mean_across_ranks(self, value: torch.Tensor) -> torch.Tensor:
        trainer = self._trainer
        return trainer.strategy.reduce(value, reduce_op="mean") if trainer is not None and trainer.world_size > 1 else value

    def weights_revision(self) -> str:
        return weights_revision(self)  # the Trainer's step, else the loaded checkpoint's

    def cache_epoch(self) -> int:
        return self.current_epoch if self._trainer is not None else 0

    # --------------------------------------------------------------- setup and callbacks
    def configure_callbacks(self):
        from lightning_modules.callbacks.cache import FrozenOutputCache

        return [FrozenOutputCache()] if self.hparams.cache_dir is not None else []

    def setup(self, stage: str) -> None:
        register_gloo_teardown()
        if self.hparams.cache_dir is not None and self.cache is None:
            trainer = self._trainer
            self.cache = self.build_cache(datamodule=getattr(trainer, "datamodule", None) if trainer else None,
                                          rank=self.global_rank if trainer is not None else 0)

    # --------------------------------------------------------------- steps
    def training_step(self, batch, batch_idx):
        loss, n = self.training_loss(batch)
        ensure_finite(self, loss)
        self.log("train/loss", loss, prog_bar=True, batch_size=n)
        return loss

    def validation_step(self, batch, batch_idx):
        loss, n = self.eval_loss(batch, "val", 10_000, batch_idx)
        self.log("val/loss", loss, prog_bar=True, sync_dist=True, batch_size=n)

    def test_step(self, batch, batch_idx):
        loss, n = self.eval_loss(batch, "test", 20_000, batch_idx)
        self.log("test/loss", loss, sync_dist=True, batch_size=n)

    def predict_step(self, batch, batch_idx, dataloader_idx=0):
        return predict_step(self, batch)  # msdm predict: PromptDataModule batches -> images (lightning_modules/prediction.py)

    def optimizer_step(self, *args, **kwargs):
        super().optimizer_step(*args, **kwargs)  # the step and the EMA update (ReseedAndAverage)
        # Lightning counts this step in global_step only after the hook returns. Taken here, before any callback's
        # on_train_batch_end, a checkpoint written at this step already holds the weaker model (exact resume).
        total = self.trainer.max_steps if self.trainer.max_steps > 0 else self.trainer.estimated_stepping_batches
        if self.guide_unet is None and self.trainer.global_step + 1 == self.guide_step(total):
            self.take_guide()

    def configure_optimizers(self):
        hp = self.hparams
        fused = hp.fused_optimizer
        if fused is None:  # the fused kernel is the fastest AdamW on GPUs; on CPU keep the default (foreach)
            fused = all(p.is_cuda for p in self.unet.parameters())
        opt = torch.optim.AdamW(self.unet.parameters(), lr=hp.lr, weight_decay=hp.weight_decay, betas=tuple(hp.betas),
                                **({"fused": True} if fused else {}))
        if not hp.lr_warmup_steps:
            return opt
        warm = hp.lr_warmup_steps
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # --------------------------------------------------------------- checkpoints: what trains (+ EMA) and a VAE copy
    def on_save_checkpoint(self, checkpoint):
        checkpoint["state_dict"] = self.trainable_state(checkpoint["state_dict"])
        if self.ema is not None:
            checkpoint["ema"] = self.ema.state_dict()
        # the VAE the U-Net was trained on travels with it: the checkpoint loads and exports from anywhere
        checkpoint[EMBEDDED_VAE] = self._vae_copy()

    def _vae_copy(self) -> dict:
        vae = self._modules.get("vae")
        if vae is not None:
            return embed_vae(vae)
        if getattr(self, "_vae_embedded", None) is None:  # training from a cache: the VAE is not loaded; once
            self._vae_embedded = embed_vae(load_vae(self.hparams.vae))
        return self._vae_embedded

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path, *args, **kwargs):
        """Lightning's, with the VAE taken from the checkpoint's own copy (``vae=PATH`` overrides it; an older
        checkpoint without a copy needs its saved VAE path to exist:
        :func:`msdm.models.loading.checkpoint_vae_source`)."""
        if "vae" not in kwargs:
            kwargs["vae"] = checkpoint_vae_source(checkpoint_path)
        return super().load_from_checkpoint(checkpoint_path, *args, **kwargs)

    def on_load_checkpoint(self, checkpoint):
        remember_checkpoint(self, checkpoint)  # generation_info() names the checkpoint's step, also without a Trainer
        self.complete_frozen_state(checkpoint["state_dict"])
        self.ensure_guide_for(checkpoint["state_dict"])
        if self.ema is not None and "ema" in checkpoint:
            self.ema.load_state_dict(checkpoint["ema"])
