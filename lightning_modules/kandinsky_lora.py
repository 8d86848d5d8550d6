"""LoRA fine-tuning of Kandinsky 2.2, one stage at a time (Prompt to Polyp §4.2.2; reference
``kandinsky2_prior_lora_train.py`` / ``kandinsky2_decoder_lora_train.py``).

Kandinsky 2.2 is a prior (CLIP text -> CLIP image embedding) and a decoder (CLIP image embedding -> MoVQ latents ->
pixels). The paper trains a LoRA for each **separately** and generates with both loaded:

- ``stage="prior"``: trains the PriorTransformer; frozen CLIP text and image towers (the image tower gives the
  target embedding of each training image).
- ``stage="decoder"``: trains the U-Net; frozen MoVQ (latents) and CLIP image tower (the condition).

``generate()`` runs the stock combined text-to-image pipeline (``KandinskyV22CombinedPipeline``) with the stage
being trained plus the other stage's base model, with the other stage's LoRA (``prior_lora`` / ``decoder_lora``)
loaded when given — so validation images during decoder training can already use the trained prior.

Saved LoRA files load into the stock pipelines (docs/lora.md)::

    prior_pipe.prior.load_lora_adapter(DIR, weight_name="pytorch_lora_weights.safetensors", prefix=None)
    decoder_pipe.unet.load_lora_adapter(DIR, weight_name="pytorch_lora_weights.safetensors", prefix=None)
"""

from __future__ import annotations

from pathlib import Path

import torch

from lightning_modules.lora_base import LoRAModuleBase
from lightning_modules.weights_info import weights_revision
from msdm.generators import StockPipelineGenerator
from msdm.generators.lora import kandinsky_pipeline, kandinsky_to_unit
from msdm.lora.adapters import add_lora, default_targets, make_lora_config
from msdm.lora.bases import KANDINSKY_DECODER_PARTS, KANDINSKY_PRIOR_PARTS, load_parts, parse_dtype
from msdm.lora.conditioning import clip_image_embeds, encode_kandinsky_prompts
from msdm.lora.losses import MIN_SNR_VARIANTS, kandinsky_decoder_loss, kandinsky_prior_loss
from msdm.lora.published import KANDINSKY22_DECODER_ID, KANDINSKY22_PRIOR_ID
from msdm.lora.save import LORA_WEIGHT_NAME, load_model_lora, save_model_lora

STAGES = ("prior", "decoder")


class KandinskyLoRAModule(LoRAModuleBase):
    """LoRA on the Kandinsky 2.2 prior or decoder.

    Args:
        stage: ``"prior"`` or ``"decoder"``: which model trains.
        prior_model / decoder_model: hub ids or local pipeline folders of the two Kandinsky 2.2 halves.
        revision: hub revision (both models), recorded in ``generation_info``.
        rank / alpha: LoRA rank and alpha (``None`` = rank, the paper's alpha = rank; paper rank 64).
        target_modules: LoRA targets (default: ``to_q, to_k, to_v, to_out.0``, the paper's).
        decoder_added_kv: decoder only — also adapt ``add_k_proj, add_v_proj`` of the image-token projections.
        init_lora_weights: peft initialisation (``"gaussian"`` as the reference; B = 0 either way).
        learning_rate, adam_*: AdamW (reference: 1e-4, betas 0.9/0.999, no weight decay, eps 1e-8).
        lr_warmup_steps: linear warm-up steps, then constant (reference: constant).
        snr_gamma: min-SNR-γ loss weighting (reference example: 5; ``None`` = off).
        snr_variant: ``"hang2023"`` (default; Hang et al. 2023 for the model's target: ``min(SNR, γ)`` for the
            x0-predicting prior, as diffusers' ``train_text_to_image_prior.py``) or ``"reference"`` (the paper's
            scripts: ``min(SNR, γ) / SNR`` also for the prior, which down-weights its low-noise steps). The same for
            the ε-predicting decoder. See :mod:`msdm.lora.losses`.
        prior_noise_schedule: noise schedule of prior training: ``"prior"`` = the prior's own UnCLIP (cosine)
            schedule, the one it samples with (diffusers' ``train_text_to_image_prior.py``); ``"decoder"`` = the
            decoder's linear DDPM schedule, which the paper's reference script used.
        frozen_dtype: dtype of the frozen weights (``float32``, ``bfloat16``, ``float16``); LoRA trains in fp32.
        gradient_checkpointing: decoder U-Net only (the PriorTransformer has no checkpointing hooks).
        prior_lora / decoder_lora: LoRA folders of the *other* stage to load for ``generate()``.
        num_inference_steps, guidance_scale, prior_num_inference_steps, prior_guidance_scale: sampling defaults of
            ``generate()`` (diffusers' CFG convention ``uncond + s (cond - uncond)``).
        **kwargs: ``height``, ``width``, ``sample_prompts``, ``noise_seed``, ``lora_output_dir``, ``export_lora``,
            ``local_files_only`` (:class:`~lightning_modules.lora_base.LoRAModuleBase`).
    """

    def __init__(
        self,
        stage: str = "prior",
        prior_model: str = KANDINSKY22_PRIOR_ID,
        decoder_model: str = KANDINSKY22_DECODER_ID,
        revision: str | None = None,
        rank: int = 64,
        alpha: float | None = None,
        target_modules: list[str] | None = None,
        decoder_added_kv: bool = False,
        init_lora_weights: str = "gaussian",
        learning_rate: float = 1e-4,
        adam_beta1: float = 0.9,
        adam_beta2: float = 0.999,
        adam_weight_decay: float = 0.0,
        adam_epsilon: float = 1e-8,
        lr_warmup_steps: int = 0,
        snr_gamma: float | None = None,
        snr_variant: str = "hang2023",
        prior_noise_schedule: str = "prior",
        frozen_dtype: str = "float32",
        gradient_checkpointing: bool = False,
        prior_lora: str | None = None,
        decoder_lora: str | None = None,
        num_inference_steps: int = 50,
        guidance_scale: float = 4.0,
        prior_num_inference_steps: int = 25,
        prior_guidance_scale: float = 4.0,
        **kwargs,
    ):
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
        if snr_variant not in MIN_SNR_VARIANTS:
            raise ValueError(f"snr_variant must be one of {MIN_SNR_VARIANTS}, got {snr_variant!r}")
        if prior_noise_schedule not in ("prior", "decoder"):
            raise ValueError(f"prior_noise_schedule must be 'prior' or 'decoder', got {prior_noise_schedule!r}")
        super().__init__(**kwargs)
        self.stage = stage
        dtype = parse_dtype(frozen_dtype)
        load = {"revision": revision, "local_files_only": self.hparams.local_files_only}

        from diffusers import DDPMScheduler

        # The CLIP image tower: the prior's target, the decoder's condition.
        p = load_parts(KANDINSKY_PRIOR_PARTS, prior_model, only=("image_encoder", "image_processor"), dtype=dtype,
                       **load)
        self.image_encoder = p["image_encoder"]
        self.image_processor = p["image_processor"]
        targets = target_modules or default_targets(f"kandinsky_{stage}", decoder_added_kv)
        config = make_lora_config(rank, alpha, targets, init_lora_weights)
        if stage == "prior":
            p = load_parts(KANDINSKY_PRIOR_PARTS, prior_model, only=("prior", "text_encoder", "tokenizer", "scheduler"),
                           dtype=dtype, **load)
            self.prior, self.text_encoder, self.tokenizer = p["prior"], p["text_encoder"], p["tokenizer"]
            self.prior_scheduler = p["scheduler"]
            if prior_noise_schedule == "prior":
                self.noise_scheduler = DDPMScheduler.from_config(self.prior_scheduler.config)
            else:
                sched = load_parts(KANDINSKY_DECODER_PARTS, decoder_model, only=("scheduler",), **load)["scheduler"]
                # x0 target whatever the decoder scheduler predicts (the reference does the same).
                self.noise_scheduler = DDPMScheduler.from_config(sched.config, prediction_type="sample")
            # clip_mean / clip_std are parameters of the prior: keep them fp32 for the normalisation.
            self.prior.clip_mean.data = self.prior.clip_mean.data.float()
            self.prior.clip_std.data = self.prior.clip_std.data.float()
            add_lora(self.prior, config)
            if gradient_checkpointing:
                raise ValueError("gradient_checkpointing is supported for the decoder stage only")
        else:
            # MoVQ in the frozen dtype too: the stock pipeline decodes the U-Net's latents without casting.
            d = load_parts(KANDINSKY_DECODER_PARTS, decoder_model, dtype=dtype, **load)
            self.unet, self.movq, self.noise_scheduler = d["unet"], d["movq"], d["scheduler"]
            add_lora(self.unet, config)
            if gradient_checkpointing:
                self.unet.enable_gradient_checkpointing()
        # Lightning (>= 2.2) keeps the modes it finds: the adapted model trains, the frozen towers stay in eval.
        self.train()

    @property
    def lora_model(self) -> torch.nn.Module:
        """The model that carries the adapter (a property, so it is not registered twice in the state dict)."""
        return self.prior if self.stage == "prior" else self.unet

    # ------------------------------------------------------------------ training
    def frozen_modules(self):
        mods = [self.image_encoder]
        mods += [self.text_encoder] if self.stage == "prior" else [self.movq]
        return mods

    def loss(self, batch: dict, generator: torch.Generator | None) -> torch.Tensor:
        pixels = batch["pixel_values"].to(self.device)
        image_embeds = clip_image_embeds(self.image_encoder, self.image_processor, pixels)
        gamma = self.hparams.snr_gamma
        if self.stage == "prior":
            text = encode_kandinsky_prompts(self.tokenizer, self.text_encoder, batch["caption"], device=self.device)
            return kandinsky_prior_loss(
                self.prior, image_embeds, text["text_embeds"], text["text_hidden_states"], text["text_mask"],
                self.noise_scheduler, generator=generator, snr_gamma=gamma, snr_variant=self.hparams.snr_variant,
            )
        with torch.no_grad():
            latents = self.movq.encode(pixels.to(self.movq.dtype)).latents
        return kandinsky_decoder_loss(self.unet, latents, image_embeds, self.noise_scheduler, generator=generator,
                                      snr_gamma=gamma, snr_variant=self.hparams.snr_variant)

    # ------------------------------------------------------------------ LoRA files
    def save_lora(self, directory: str) -> Path:
        hp = self.hparams
        info = {"stage": self.stage, "base_model": hp.prior_model if self.stage == "prior" else hp.decoder_model,
                "revision": hp.revision, "rank": hp.rank, "alpha": hp.alpha if hp.alpha is not None else hp.rank,
                "load": (f"pipe.{'prior' if self.stage == 'prior' else 'unet'}.load_lora_adapter(DIR, "
                         f"weight_name='{LORA_WEIGHT_NAME}', prefix=None)")}
        return save_model_lora(self.lora_model, directory, info=info)

    # ------------------------------------------------------------------ generation
    def _pipeline(self):
        """The stock combined pipeline around the trained model (LoRA active) and the other stage's base + LoRA."""
        hp = self.hparams
        load = {"revision": hp.revision, "local_files_only": hp.local_files_only}
        dtype = parse_dtype(hp.frozen_dtype)
        if "pipe" not in self._gen:
            if self.stage == "prior":
                d = load_parts(KANDINSKY_DECODER_PARTS, hp.decoder_model, dtype=dtype, **load)
                if hp.decoder_lora:
                    load_model_lora(d["unet"], hp.decoder_lora)
                prior_parts = {"prior": self.prior, "text_encoder": self.text_encoder, "tokenizer": self.tokenizer,
                               "scheduler": self.prior_scheduler}
                self._gen["other"] = [d["unet"], d["movq"]]
            else:
                p = load_parts(KANDINSKY_PRIOR_PARTS, hp.prior_model, only=("prior", "text_encoder", "tokenizer",
                                                                            "scheduler"), dtype=dtype, **load)
                if hp.prior_lora:
                    load_model_lora(p["prior"], hp.prior_lora)
                from diffusers import DDPMScheduler

                # A copy: sampling calls set_timesteps on its scheduler; training keeps its own.
                d = {"unet": self.unet, "movq": self.movq,
                     "scheduler": DDPMScheduler.from_config(self.noise_scheduler.config)}
                prior_parts = p
                self._gen["other"] = [p["prior"], p["text_encoder"]]
            self._gen["pipe"] = kandinsky_pipeline(prior_parts, d, self.image_encoder, self.image_processor)
            self._gen["pipe"].set_progress_bar_config(disable=True)
        for m in self._gen["other"]:
            m.to(self.device)
        return self._gen["pipe"]

    def sampling_defaults(self) -> dict:
        return {k: self.hparams[k] for k in ("height", "width", "num_inference_steps", "guidance_scale",
                                             "prior_num_inference_steps", "prior_guidance_scale")}

    def build_generator(self, call_kwargs: dict, batch_size: int) -> StockPipelineGenerator:
        """The combined pipeline (one generator per image: the prior's and the decoder's noise of image ``i`` come
        from seed ``i``); MoVQ output in [-1, 1] mapped to [0, 1], never min-max stretched."""
        return StockPipelineGenerator(self._pipeline(), kandinsky_to_unit, call_kwargs, weights=self.sampling_weights,
                                      batch_size=batch_size)

    def generation_info(self) -> dict:
        hp = self.hparams
        pipe = self._gen.get("pipe")
        return {
            "model": "kandinsky-2.2+lora",
            "prior_model": hp.prior_model,
            "decoder_model": hp.decoder_model,
            "revision": hp.revision,
            "trained_stage": self.stage,
            "prior_lora": "(this module)" if self.stage == "prior" else hp.prior_lora,
            "decoder_lora": "(this module)" if self.stage == "decoder" else hp.decoder_lora,
            "lora_rank": hp.rank,
            "lora_weights": weights_revision(self),  # the training step of the LoRA (a loaded checkpoint's too)
            "lora_alpha": hp.alpha if hp.alpha is not None else hp.rank,
            "sampler": type(pipe.scheduler).__name__ if pipe is not None else "DDPMScheduler",
            "prior_sampler": "UnCLIPScheduler",
            "steps": hp.num_inference_steps,
            "prior_steps": hp.prior_num_inference_steps,
            "guidance_scale": hp.guidance_scale,
            "prior_guidance_scale": hp.prior_guidance_scale,
            "guidance_convention": "diffusers: uncond + s * (cond - uncond)",
            "height": hp.height,
            "width": hp.width,
            "seed": self.base_seed(),
        }
