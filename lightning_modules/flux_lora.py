"""LoRA fine-tuning of FLUX.1 with rectified flow matching (Prompt to Polyp §4.2.3: FLUX.1-dev + LoRA, the paper's
best generator; objective and defaults from diffusers' ``train_dreambooth_lora_flux.py``).

Memory plan for one 80 GB GPU at 256² and rank 64 (bench/flux_lora_memory.py measures it):

- the 12 B transformer is frozen in bf16 (24 GB); the LoRA weights (179 M at rank 64) and AdamW state are fp32;
- the text conditioning (T5-XXL token states + pooled CLIP-L) is computed once per **(sample id, caption)** and
  cached (:class:`msdm.lora.embedding_cache.EmbeddingCache`, on disk as safetensors shards); the two text encoders
  (4.9 B parameters, 9.8 GB in bf16) live on the CPU and visit the GPU only to fill cache misses — all of them in
  one pass before the first step (``precompute_text_embeddings``), then only for captions never seen (a new
  paraphrase);
- optional gradient checkpointing of the transformer blocks.

The VAE (84 M parameters, 0.2 GB) stays on the GPU and encodes each batch: caching latents per sample id is only
correct without random image augmentation, which the DataModules may apply.

Saved LoRA files are ``FluxPipeline.save_lora_weights`` folders: ``pipe.load_lora_weights(DIR)`` (docs/lora.md).
"""

from __future__ import annotations

from pathlib import Path

import torch

from lightning_modules.lora_base import LoRAModuleBase, visiting
from lightning_modules.weights_info import weights_revision
from msdm.generators import StockPipelineGenerator
from msdm.generators.lora import flux_to_unit
from msdm.lora.adapters import add_lora, default_targets, make_lora_config
from msdm.lora.bases import FLUX_PARTS, load_parts, parse_dtype
from msdm.lora.conditioning import encode_flux_prompts
from msdm.lora.embedding_cache import EmbeddingCache, fingerprint, module_fingerprint
from msdm.lora.losses import flux_flow_matching_loss, flux_latents
from msdm.lora.published import FLUX1_DEV_ID
from msdm.lora.save import save_flux_lora

WEIGHTING_SCHEMES = ("none", "logit_normal", "mode", "sigma_sqrt", "cosmap")


class FluxLoRAModule(LoRAModuleBase):
    """LoRA on the FLUX.1 transformer.

    Args:
        model: hub id or local folder of a FLUX.1 pipeline (default ``black-forest-labs/FLUX.1-dev``).
        revision: hub revision, recorded in ``generation_info``.
        rank / alpha: LoRA rank and alpha (``None`` = rank; paper: rank = alpha = 64).
        target_modules: LoRA targets (default: diffusers' FLUX list, see :data:`msdm.lora.adapters.FLUX_TARGETS`).
        init_lora_weights: peft initialisation (``"gaussian"``, as diffusers' script).
        learning_rate, adam_*: AdamW (diffusers' script: 1e-4, betas 0.9/0.999, weight decay 1e-4, eps 1e-8).
        lr_warmup_steps: linear warm-up, then constant.
        guidance_scale: the value fed to FLUX.1-dev's **guidance embedding during training** (ignored by models
            without one). Default 1.0, the value diffusers' README trains with; the script's own default is 3.5
            (diffusers#11181). See docs/lora.md.
        weighting_scheme, logit_mean, logit_std, mode_scale: timestep sampling / loss weighting of diffusers'
            training utilities (``none`` = uniform; ``logit_normal``; ``mode``; ``sigma_sqrt``; ``cosmap``).
        max_sequence_length: T5 tokens (FluxPipeline's default 512; use the same at inference — ``generate`` does).
        frozen_dtype: dtype of the frozen transformer, VAE and text encoders (bf16 by default; LoRA trains in fp32).
        gradient_checkpointing: recompute transformer blocks in backward.
        cache_text_embeddings: cache T5 + pooled CLIP outputs per (sample id, caption).
        text_cache_dir: cache folder (default ``<trainer.default_root_dir>/cache/flux_text``; ``"memory"`` keeps it
            in RAM).
        text_cache_key: ``"caption"`` (default): one entry per distinct caption, shared by every image that has it —
            the embedding is a function of the caption alone, and MEDVQA-GI's 2 000 images share 483 prompts, so this
            stores ~40x less than per-image entries (T5 states are ~4 MB a caption at 512 tokens); ``"sample"``: one
            entry per (sample id, caption). Either way a batch gets each sample's own caption's embedding, whatever
            the loader order (never keyed by step).
        offload_text_encoders: keep the text encoders on the CPU except while they fill cache misses.
        precompute_text_embeddings: fill the cache in one pass over the training loader before the first step.
        num_inference_steps, generation_guidance_scale: ``generate()`` defaults (FLUX.1-dev: 28 steps, guidance 3.5).
        **kwargs: ``height``, ``width``, ``sample_prompts``, ``noise_seed``, ``lora_output_dir``, ``export_lora``,
            ``local_files_only`` (:class:`~lightning_modules.lora_base.LoRAModuleBase`).
    """

    def __init__(
        self,
        model: str = FLUX1_DEV_ID,
        revision: str | None = None,
        rank: int = 64,
        alpha: float | None = None,
        target_modules: list[str] | None = None,
        init_lora_weights: str = "gaussian",
        learning_rate: float = 1e-4,
        adam_beta1: float = 0.9,
        adam_beta2: float = 0.999,
        adam_weight_decay: float = 1e-4,
        adam_epsilon: float = 1e-8,
        lr_warmup_steps: int = 0,
        guidance_scale: float = 1.0,
        weighting_scheme: str = "none",
        logit_mean: float = 0.0,
        logit_std: float = 1.0,
        mode_scale: float = 1.29,
        max_sequence_length: int = 512,
        frozen_dtype: str = "bfloat16",
        gradient_checkpointing: bool = False,
        cache_text_embeddings: bool = True,
        text_cache_dir: str | None = None,
        text_cache_key: str = "caption",
        offload_text_encoders: bool = True,
        precompute_text_embeddings: bool = True,
        num_inference_steps: int = 28,
        generation_guidance_scale: float = 3.5,
        **kwargs,
    ):
        if text_cache_key not in ("caption", "sample"):
            raise ValueError(f"text_cache_key must be 'caption' or 'sample', got {text_cache_key!r}")
        if weighting_scheme not in WEIGHTING_SCHEMES:
            raise ValueError(f"weighting_scheme must be one of {WEIGHTING_SCHEMES}, got {weighting_scheme!r}")
        super().__init__(**kwargs)
        parts = self.load_base()
        self.transformer = parts["transformer"]
        self.vae = parts["vae"]
        self.noise_scheduler = parts["scheduler"]
        # Not registered as submodules: Lightning must not move them to the GPU (they visit it on cache misses)
        # and they never enter checkpoints.
        self._text = {k: parts[k] for k in ("text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2")}
        self._text_cache: EmbeddingCache | None = None
        add_lora(self.transformer, make_lora_config(rank, alpha, target_modules or default_targets("flux"),
                                                    init_lora_weights))
        if gradient_checkpointing:
            self.transformer.enable_gradient_checkpointing()
        # Lightning (>= 2.2) keeps the modes it finds: the transformer trains, the frozen encoders stay in eval.
        self.train()

    def load_base(self) -> dict:
        """The frozen FLUX components (override to build them otherwise, e.g. random weights in a bench)."""
        hp = self.hparams
        return load_parts(FLUX_PARTS, hp.model, dtype=parse_dtype(hp.frozen_dtype), revision=hp.revision,
                          local_files_only=hp.local_files_only)

    @property
    def lora_model(self) -> torch.nn.Module:
        return self.transformer

    def frozen_modules(self):
        return [self.vae, self._text["text_encoder"], self._text["text_encoder_2"]]

    # ------------------------------------------------------------------ text conditioning (cached per sample id)
    def _text_encoders(self) -> list[torch.nn.Module]:
        return [self._text["text_encoder"], self._text["text_encoder_2"]]

    def encode_prompts(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        """T5 + pooled CLIP embeddings of ``prompts`` on this module's device (no cache)."""
        t = self._text
        stay = not self.hparams.offload_text_encoders
        with visiting(self._text_encoders(), self.device, stay=stay):
            return encode_flux_prompts(t["tokenizer"], t["text_encoder"], t["tokenizer_2"], t["text_encoder_2"],
                                       prompts, self.hparams.max_sequence_length, device=self.device)

    def text_cache(self) -> EmbeddingCache | None:
        """The per-(sample id, caption) cache of text embeddings (created on first use, on this rank)."""
        hp = self.hparams
        if not hp.cache_text_embeddings:
            return None
        if self._text_cache is None:
            t = self._text
            parts = {
                "what": "flux-text-embeddings", "key": hp.text_cache_key, "model": hp.model, "revision": hp.revision,
                "max_sequence_length": hp.max_sequence_length, "dtype": hp.frozen_dtype,
                "clip": module_fingerprint(t["text_encoder"]), "t5": module_fingerprint(t["text_encoder_2"]),
                "clip_max_length": t["tokenizer"].model_max_length, "t5_vocab": len(t["tokenizer_2"]),
            }
            directory = hp.text_cache_dir
            if directory is None:
                directory = (Path(self.trainer.default_root_dir) / "cache" / "flux_text") if self._trainer else "memory"
            directory = None if directory == "memory" else directory
            rank = self.global_rank if self._trainer is not None else 0
            self._text_cache = EmbeddingCache(directory, fingerprint(**parts), rank=rank,
                                              store_dtype=parse_dtype(hp.frozen_dtype),
                                              describe={"model": hp.model, "max_sequence_length": hp.max_sequence_length})
        return self._text_cache

    def _cache_ids(self, ids: list[str]) -> list[str]:
        return list(ids) if self.hparams.text_cache_key == "sample" else [""] * len(ids)

    def text_embeddings(self, ids: list[str], captions: list[str]) -> dict[str, torch.Tensor]:
        """Batch conditioning for ``captions`` of samples ``ids``: from the cache, computing only what is missing."""
        cache = self.text_cache()
        if cache is None:
            return self.encode_prompts(captions)
        return cache.get_or_compute(self._cache_ids(ids), captions,
                                    lambda rows: self.encode_prompts([captions[j] for j in rows]), device=self.device)

    @torch.no_grad()
    def precompute(self, dataloader, max_batches: int | None = None) -> int:
        """Fill the text cache from ``dataloader`` with the encoders on the GPU once; returns the entries added."""
        cache = self.text_cache()
        if cache is None:
            return 0
        before = cache.misses
        # The encoders visit the GPU once for the whole pass (text_embeddings' own visits are then no-ops).
        with visiting(self._text_encoders(), self.device, stay=not self.hparams.offload_text_encoders):
            for i, batch in enumerate(dataloader):
                if max_batches is not None and i >= max_batches:
                    break
                self.text_embeddings(list(batch["id"]), list(batch["caption"]))
        cache.flush()
        return cache.misses - before

    def on_train_start(self):
        hp = self.hparams
        if hp.cache_text_embeddings and hp.precompute_text_embeddings and self.trainer.train_dataloader is not None:
            n = self.trainer.num_training_batches
            self.precompute(self.trainer.train_dataloader, None if n == float("inf") else int(n))

    def on_train_epoch_end(self):
        if self._text_cache is not None:
            self._text_cache.flush()

    def on_fit_end(self):
        if self._text_cache is not None:
            self._text_cache.flush()

    # ------------------------------------------------------------------ training
    def loss(self, batch: dict, generator: torch.Generator | None) -> torch.Tensor:
        hp = self.hparams
        text = self.text_embeddings(list(batch["id"]), list(batch["caption"]))
        pixels = batch["pixel_values"].to(self.device, self.vae.dtype)
        with torch.no_grad():
            z = self.vae.encode(pixels).latent_dist.sample(generator=generator)
        latents = flux_latents(z, self.vae.config)
        return flux_flow_matching_loss(
            self.transformer, latents, text["prompt_embeds"], text["pooled_prompt_embeds"], self.noise_scheduler,
            guidance_scale=hp.guidance_scale, weighting_scheme=hp.weighting_scheme, logit_mean=hp.logit_mean,
            logit_std=hp.logit_std, mode_scale=hp.mode_scale, generator=generator,
        )

    # ------------------------------------------------------------------ LoRA files
    def save_lora(self, directory: str) -> Path:
        hp = self.hparams
        info = {"base_model": hp.model, "revision": hp.revision, "rank": hp.rank,
                "alpha": hp.alpha if hp.alpha is not None else hp.rank, "train_guidance_scale": hp.guidance_scale,
                "max_sequence_length": hp.max_sequence_length, "load": "pipe.load_lora_weights(DIR)"}
        return save_flux_lora(self.transformer, directory, info=info)

    # ------------------------------------------------------------------ generation
    def _pipeline(self):
        from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline

        if "pipe" not in self._gen:
            # Text encoders stay out of the pipeline: generate() passes embeddings (they may be on the CPU).
            self._gen["pipe"] = FluxPipeline(
                scheduler=FlowMatchEulerDiscreteScheduler.from_config(self.noise_scheduler.config), vae=self.vae,
                text_encoder=None, tokenizer=None, text_encoder_2=None, tokenizer_2=None,
                transformer=self.transformer,
            )
            self._gen["pipe"].set_progress_bar_config(disable=True)
        return self._gen["pipe"]

    def sampling_defaults(self) -> dict:
        hp = self.hparams
        return {"height": hp.height, "width": hp.width, "num_inference_steps": hp.num_inference_steps,
                "guidance_scale": hp.generation_guidance_scale}  # FLUX.1-dev's distilled guidance: no CFG pass

    def build_generator(self, call_kwargs: dict, batch_size: int) -> StockPipelineGenerator:
        """FluxPipeline on the text embeddings (the encoders may live on the CPU), one generator per image."""
        def encode(prompts):
            text = self.encode_prompts(prompts)
            return {"prompt_embeds": text["prompt_embeds"], "pooled_prompt_embeds": text["pooled_prompt_embeds"]}

        return StockPipelineGenerator(self._pipeline(), flux_to_unit, call_kwargs, encode=encode,
                                      embeds_dtype=parse_dtype(self.hparams.frozen_dtype),
                                      weights=self.sampling_weights, batch_size=batch_size)

    def generation_info(self) -> dict:
        hp = self.hparams
        return {
            "model": "flux+lora",
            "base_model": hp.model,
            "revision": hp.revision,
            "lora_rank": hp.rank,
            "lora_weights": weights_revision(self),  # the training step of the LoRA (a loaded checkpoint's too)
            "lora_alpha": hp.alpha if hp.alpha is not None else hp.rank,
            "sampler": "FlowMatchEulerDiscreteScheduler",
            "steps": hp.num_inference_steps,
            "guidance_scale": hp.generation_guidance_scale,
            "guidance_kind": "FLUX.1-dev distilled guidance embedding (no CFG pass)",
            "train_guidance_scale": hp.guidance_scale,
            "max_sequence_length": hp.max_sequence_length,
            "height": hp.height,
            "width": hp.width,
            "seed": self.base_seed(),
        }
