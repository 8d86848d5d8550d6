"""MSDM stage 2 without a Trainer: the text-conditioned latent U-Net trained on the frozen VAE and text encoder.

:class:`Stage2` is an ``nn.Module`` mixin holding everything but the Lightning wiring (``MSDMUNetModule`` in
``lightning_modules/unet_module.py`` is the shell; a notebook's own loop can use it too): building the U-Net from a
preset, the frozen parts (:class:`~msdm.models.frozen.FrozenParts`, eager or lazy), latent scaling, the latent + text
cache reads (:mod:`msdm.cache.frozen_outputs`), the training loss (Prompt to Polyp §4.2.1: ε-prediction, per-sample
CFG dropout), the deterministic evaluation loss, the EMA, and sampling: :meth:`Stage2.to_pipeline` (an
:class:`~msdm.pipeline.MSDMPipeline` sharing the live weights) and :meth:`Stage2.generator` (the
:class:`~msdm.generators.MSDMGenerator` every caller samples through).

The settings are read from ``self.hparams`` (a mapping of ``MSDMUNetModule``'s constructor arguments). Hooks a shell
may override: :meth:`mean_across_ranks` (the "auto" latent scale under DDP), :meth:`weights_revision` (provenance)
and :meth:`cache_epoch` (which augmentation variant the cache serves).
"""

from __future__ import annotations

import contextlib

import torch

from msdm.cache import frozen_outputs
from msdm.diffusion import diffusion_loss, drop_captions, evaluation_loss, training_scheduler
from msdm.dtypes import parse_dtype
from msdm.generators.base import prompt_major, sampling_mode
from msdm.generators.msdm_pipeline import MSDMGenerator
from msdm.generators.samplers import make_sampler, sampler_name
from msdm.models.frozen import FROZEN_PREFIXES, FrozenParts, text_hidden_size_from_config, vae_scaling_factor
from msdm.models.presets import build_unet, get_preset
from msdm.models.text_encoder import PromptEncoder, text_hidden_size
from msdm.training.ema import EMA

CACHE_ON_MISS = ("encode", "error")


class Stage2(FrozenParts):
    """``nn.Module`` mixin: the MSDM U-Net on frozen parts (module docstring). Call :meth:`init_stage2` in
    ``__init__`` once ``self.hparams`` holds the settings."""

    # ------------------------------------------------------------------------------------------------ building
    def init_stage2(self) -> None:
        hp = self.hparams
        if hp.cache_on_miss not in CACHE_ON_MISS:
            raise ValueError(f"cache_on_miss must be one of {CACHE_ON_MISS}, got {hp.cache_on_miss!r}")
        self._frozen_dtype = parse_dtype(hp.frozen_dtype)
        parse_dtype(hp.cache_dtype)
        p = self._preset = get_preset(hp.preset)
        self.resolution = hp.image_size or p.resolution
        self.sample_prompts = list(hp.sample_prompts or [])
        self.cache = None  # TrainingCache, built by the shell's setup (it fingerprints the DataModule's transform)
        self._prompt_encoder = None  # PromptEncoder over the loaded text encoder (built on first use)
        # With a cache the frozen parts load lazily (they are not needed to train from it). A VAE without a source
        # (vae=None: random weights, debugging only) cannot be reloaded identically, so it is built now.
        lazy = hp.cache_dir is not None and hp.vae is not None
        self.init_frozen(lazy)
        if lazy:
            text_dim = text_hidden_size_from_config(hp.text_encoder, hp.local_files_only, hp.trust_remote_code)
        else:
            text_dim = text_hidden_size(self.text_encoder)
        self.unet = build_unet(p, text_dim, **(hp.unet_overrides or {}))
        if not self._lazy_frozen:
            self._check_latent_channels(self.vae.config.latent_channels)
        if hp.gradient_checkpointing:
            self.unet.enable_gradient_checkpointing()
        if hp.channels_last:
            self.unet.to(memory_format=torch.channels_last)
        if hp.torch_compile:
            # nn.Module.compile compiles the call in place: parameter names (checkpoints, EMA, export) are unchanged
            self.unet.compile(backend=hp.compile_backend, **({"mode": hp.compile_mode} if hp.compile_mode else {}))
        # the noise process (paper: ε on the scaled-linear schedule; msdm's recipe: v + zero terminal SNR); settings
        # saved before these options existed read as the paper's
        self.scheduler = training_scheduler(hp.get("prediction_type", "epsilon"), hp.get("zero_terminal_snr", False),
                                            **(hp.get("scheduler_overrides") or {}))
        self.ema = EMA(self.unet.parameters(), decay=hp.ema_decay) if hp.ema_decay else None
        autoguidance = hp.get("autoguidance")
        if autoguidance is not None and not 0.0 < float(autoguidance) < 1.0:
            raise ValueError(f"autoguidance is the fraction of training whose EMA weights become the weaker model, "
                             f"in (0, 1); got {autoguidance!r}")
        self.guide_unet = None  # autoguidance's weaker U-Net, taken by take_guide (a frozen submodule once taken)
        if hp.latent_scaling == "auto":
            init = float("nan")  # resolved from the first training batch (_scale_latents)
        elif hp.latent_scaling is None:
            init = vae_scaling_factor(hp.vae) if lazy else float(getattr(self.vae.config, "scaling_factor", 1.0) or 1.0)
        else:
            init = float(hp.latent_scaling)
        self.register_buffer("latent_scale", torch.tensor(init))

    # ------------------------------------------------------------------------------------------------ shell hooks
    def mean_across_ranks(self, value: torch.Tensor) -> torch.Tensor:
        return value

    def weights_revision(self) -> str:
        return "untracked"

    def cache_epoch(self) -> int:
        return 0

    # ------------------------------------------------------------------------------------------------ frozen parts
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
            from msdm.errors import InputError  # the user's choice of VAE: one line in the CLI, exit 2

            raise InputError(f"the VAE {self.hparams.vae} has {channels} latent channels but preset "
                             f"{self.hparams.preset!r}'s U-Net takes {self.unet.config.in_channels}: give the VAE trained "
                             f"for this preset (--model.init_args.vae), or the preset of this VAE")

    def _apply(self, fn, *args, **kwargs):
        self._prompt_encoder = None  # moved or cast: memoised encodings would be on the old device/dtype
        return super()._apply(fn, *args, **kwargs)

    def train(self, mode: bool = True):
        super().train(mode)
        self.keep_frozen_in_eval()  # no dropout in the frozen parts, whatever a trainer toggles
        return self

    def trainable_state(self, state_dict: dict) -> dict:
        """``state_dict`` without the frozen parts (they reload from their sources: checkpoints hold what trains)."""
        return {k: v for k, v in state_dict.items() if not k.startswith(FROZEN_PREFIXES)}

    def complete_frozen_state(self, state_dict: dict) -> None:
        """Put the live frozen weights into a checkpoint's ``state_dict``, so strict loading checks every U-Net key."""
        for k, v in torch.nn.Module.state_dict(self).items():
            if k.startswith(FROZEN_PREFIXES) and k not in state_dict:
                state_dict[k] = v

    # ------------------------------------------------------------------------------------------------ cache
    def build_cache(self, datamodule=None, rank: int = 0):
        """The :class:`~msdm.cache.training.TrainingCache` of these settings and ``datamodule``'s transform
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
        mean, std = frozen_outputs.read_posterior(self.cache, batch, split, self.cache_epoch(),
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
            shard_by_id=shard_by_id, scheme=scheme, max_batches=max_batches, restore_epoch=self.cache_epoch())

    # ------------------------------------------------------------------------------------------------ encoding
    def _scale_latents(self, z: torch.Tensor) -> torch.Tensor:
        if torch.isnan(self.latent_scale):  # "auto": 1/std of the first training batch's latents, over all ranks
            std = self.mean_across_ranks(z.float().std())
            self.latent_scale.fill_(1.0 / float(std.clamp(min=1e-6)))
        # the U-Net's dtype: a frozen VAE in bf16 must not make the trainable path bf16 outside autocast
        return (z * self.latent_scale.to(z.dtype)).to(self.unet.dtype)

    @torch.no_grad()
    def encode_images(self, pixel_values: torch.Tensor, sample: bool = True) -> torch.Tensor:
        post = self.vae.encode(pixel_values.to(self.vae.dtype)).latent_dist
        return self._scale_latents(post.sample() if sample else post.mode())

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
        """Token states + mask (:attr:`prompt_encoder`, memoised per prompt or per sentence; exact, as the frozen
        encoder is in eval mode). With a cache the encodings come from it (the text encoder stays unloaded)."""
        captions = list(captions)
        if self.cache is not None:
            return frozen_outputs.read_text(self.cache, captions, self._on_miss(self._encode_text), device=self.device)
        return self.prompt_encoder(captions, device=self.device)

    # ------------------------------------------------------------------------------------------------ losses
    def memory_format(self):
        return torch.channels_last if self.hparams.channels_last else None

    def training_loss(self, batch) -> tuple[torch.Tensor, int]:
        """Denoising loss of a batch (ε or v target, min-SNR-γ weights when ``snr_gamma``) with per-sample CFG
        dropout: ``(loss, batch size)``."""
        latents = self.batch_latents(batch, "train")
        captions, _ = drop_captions(list(batch["caption"]), self.hparams.cfg_dropout)
        states, mask = self.encode_prompts(captions)
        if mask is not None and not self.hparams.get("torch_compile"):
            # drop the token columns that are padding in every row: the U-Net gives padding a -1e4 key bias (exp()
            # underflows to 0) and pools the masked mean, so the loss is the same up to summation order, and cross-
            # attention is cheaper (joined captions: ~95 of 128 tokens at batch 8; ~10 % of a CPU step). Compiled
            # U-Nets keep the static length (no recompiles); the evaluation loss keeps it too (batch-independent).
            keep = mask.bool().any(dim=0)  # any padding side
            if not bool(keep.all()):
                states, mask = states[:, keep], mask[:, keep]
        loss = diffusion_loss(self.unet, latents, states, mask, self.scheduler, self.hparams.loss_type,
                              memory_format=self.memory_format(), snr_gamma=self.hparams.get("snr_gamma"), snr_offset=self.hparams.get("snr_offset"))
        return loss, latents.shape[0]

    def eval_loss(self, batch, split: str, seed: int, batch_idx: int = 0) -> tuple[torch.Tensor, int]:
        """Deterministic evaluation loss (EMA weights when on): posterior mean, no CFG dropout, noise and timesteps
        keyed by (sample id, caption) — :func:`msdm.diffusion.evaluation_loss`; batches without ids fall back to
        the seed ``seed + batch_idx``."""
        latents = self.batch_latents(batch, split, sample=False)
        captions = list(batch["caption"])
        states, mask = self.encode_prompts(captions)
        keys = [f"{i}\x00{c}" for i, c in zip(batch["id"], captions)] if "id" in batch else None
        with self.ema_weights():
            loss = evaluation_loss(self.unet, latents, states, mask, self.scheduler, self.hparams.loss_type,
                                   seed if keys is not None else seed + batch_idx, keys, self.memory_format(),
                                   snr_gamma=self.hparams.get("snr_gamma"), snr_offset=self.hparams.get("snr_offset"))
        return loss, latents.shape[0]

    def ema_weights(self):
        """Context in which the U-Net holds its EMA weights (a no-op without EMA)."""
        return self.ema.swapped_in() if self.ema is not None else contextlib.nullcontext()

    # ------------------------------------------------------------------------------------------------ autoguidance
    def guide_step(self, total_steps: int) -> int | None:
        """The optimizer step whose sampling weights become autoguidance's weaker model: ``autoguidance`` × the
        run's steps (at least 1), or None when the option is off."""
        frac = self.hparams.get("autoguidance")
        return None if frac is None else max(1, round(float(frac) * int(total_steps)))

    @torch.no_grad()
    def take_guide(self) -> None:
        """Freeze a copy of the current sampling weights (EMA when on) as :attr:`guide_unet`: the "bad version of
        itself" of Karras et al. 2024 (autoguidance), an earlier, less trained model of the same run, which guides
        sampling in place of the unconditional branch. On real Kvasir frames this guidance lowered FID at the same
        box-prompt gap (docs/benchmarks.md, Real frames)."""
        import copy

        with self.ema_weights():
            guide = copy.deepcopy(getattr(self.unet, "_orig_mod", self.unet))
        self.guide_unet = guide.eval().requires_grad_(False)

    def ensure_guide_for(self, state_dict: dict) -> None:
        """Build an (empty) :attr:`guide_unet` when a checkpoint's ``state_dict`` holds one, so that strict loading
        restores it (checkpoints written before the weaker model was taken have none)."""
        if self.guide_unet is None and any(k.startswith("guide_unet.") for k in state_dict):
            self.take_guide()

    # ------------------------------------------------------------------------------------------------ sampling
    def to_pipeline(self, sampler: str | None = None):
        """An :class:`~msdm.pipeline.MSDMPipeline` sharing this model's (live) components."""
        from msdm.pipeline import MSDMPipeline

        scale = float(self.latent_scale)
        if scale != scale:  # still NaN: "auto" before any training step
            raise RuntimeError("latent_scaling='auto' is not resolved yet: run at least one training step first")
        self.vae.register_to_config(scaling_factor=scale)
        pipe = MSDMPipeline(
            vae=self.vae, unet=self.unet, text_encoder=self.text_encoder, tokenizer=self.tokenizer,
            scheduler=make_sampler(sampler or self.hparams.sampler, dict(self.scheduler.config)),
            resolution=self.resolution, text_chunking=self.hparams.text_chunking,
            guidance_scale=self.hparams.guidance_scale, guidance_interval=self.hparams.get("guidance_interval"),
            guide_unet=self.guide_unet,
        )
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def _sampling_weights(self):
        return sampling_mode(self.unet, self.ema_weights())

    def generator(self, sampler: str | None = None, guidance_scale: float | None = None,
                  num_inference_steps: int | None = None, eta: float | None = None, batch_size: int = 32,
                  **call_kwargs) -> MSDMGenerator:
        """This model as a :class:`~msdm.generators.MSDMGenerator` (EMA weights, eval mode while sampling); the
        arguments override the sampling defaults of the settings (``sampler``, ``num_inference_steps``,
        ``guidance_scale``, ``eta``)."""
        h = self.hparams
        gen = MSDMGenerator(self.to_pipeline(sampler), steps=num_inference_steps or h.num_inference_steps,
                            guidance_scale=h.guidance_scale if guidance_scale is None else guidance_scale,
                            eta=h.eta if eta is None else eta, batch_size=batch_size, call_kwargs=call_kwargs,
                            weights=self._sampling_weights)
        # what generation_info() reports: the settings this model last sampled with, not only the defaults
        self._last_sampling = {k: v for k, v in gen.info().items() if k in ("sampler", "steps", "guidance_scale", "eta")}
        return gen

    @torch.no_grad()
    def generate(self, prompts: list[str], num_images_per_prompt: int = 1, seed: int | None = None,
                 guidance_scale: float | None = None, num_inference_steps: int | None = None,
                 sampler: str | None = None, eta: float | None = None, batch_size: int = 32) -> torch.Tensor:
        """Images for ``prompts``, prompt-major, float [N, 3, H, W] in [0, 1] on CPU (EMA weights when on). Image
        ``k`` is drawn from its own generator seeded ``seed + k`` (a random seed when None)."""
        if not prompts:
            return torch.empty(0, 3, self.resolution, self.resolution)
        seed = int(torch.randint(0, 2**31 - 1, ()).item()) if seed is None else seed
        gen = self.generator(sampler, guidance_scale, num_inference_steps, eta, batch_size)
        return gen.generate(*prompt_major(prompts, num_images_per_prompt, seed))

    @torch.no_grad()
    def generate_with_seeds(self, prompts: list[str], seeds: list[int], batch_size: int = 32,
                            **sampling) -> torch.Tensor:
        """Image ``i`` for ``prompts[i]`` drawn with seed ``seeds[i]``; ``sampling`` as in :meth:`generator`."""
        return self.generator(batch_size=batch_size, **sampling).generate(prompts, seeds)

    def generation_info(self) -> dict:
        """What reproduces this model's images: the weights (:meth:`weights_revision`) and the sampling settings of
        the last :meth:`generator` (the settings' defaults before any)."""
        h = self.hparams
        used = getattr(self, "_last_sampling", None) or {
            "sampler": sampler_name(make_sampler(h.sampler, dict(self.scheduler.config))),
            "steps": h.num_inference_steps, "guidance_scale": h.guidance_scale, "eta": h.eta}
        info = {"model": f"MSDM-{h.preset}", "revision": self.weights_revision(), "text_encoder": h.text_encoder,
                "sampler": used["sampler"], "steps": used["steps"], "guidance_scale": used["guidance_scale"],
                "guidance_convention": "diffusers: uncond + s*(cond - uncond)", "eta": used["eta"]}
        if self.guide_unet is not None:
            info["guidance"] = f"autoguidance (the EMA weights at {float(h.autoguidance):g} of training)"
            info["guidance_convention"] = "autoguidance: guide + s*(cond - guide), same prompt"
        return info

    def export(self, path: str, sampler: str | None = None) -> None:
        """Write a self-contained pipeline folder (EMA weights when on), atomically."""
        with self.ema_weights():
            self.to_pipeline(sampler).save_pretrained(path)
