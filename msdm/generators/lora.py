"""Kandinsky 2.2 and FLUX.1 (with msdm's LoRA) as :class:`~msdm.generators.base.Generator` s.

:class:`StockPipelineGenerator` runs a stock diffusers pipeline (``KandinskyV22CombinedPipeline``, ``FluxPipeline``)
with one ``torch.Generator`` per image, seeded ``seeds[i]``: the pipelines draw every noise tensor (initial latents,
the prior's latents, ancestral-step noise) row by row from the generator of that row, so image ``i`` is the same in
any batch and on any rank — the rule of :class:`~msdm.generators.msdm_pipeline.MSDMGenerator`. (Drawing a whole batch
from one generator, as the LoRA modules once did, made an image depend on what else was in its call.)

:func:`load_lora_generator` builds one from LoRA folders written by msdm's LoRA modules (``msdm_lora.json`` inside):
FLUX (one folder) or Kandinsky 2.2 (a prior and/or a decoder folder; a stage without one runs its base model), with
the base models the folders name (or ``base_models``). The LoRA LightningModules build the same generator around
their live, training weights.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from pathlib import Path

import torch

from msdm.generators.base import batched, seeded_generators

GUIDANCE_CONVENTION = "diffusers: uncond + s*(cond - uncond)"


def kandinsky_to_unit(x: torch.Tensor) -> torch.Tensor:
    """KandinskyV22 returns MoVQ output in [-1, 1] for ``output_type="pt"``: map it, never min-max stretch."""
    return ((x.float() + 1) / 2).clamp(0, 1)


def flux_to_unit(x: torch.Tensor) -> torch.Tensor:
    return x.float().clamp(0, 1)


class StockPipelineGenerator:
    """A stock diffusers text-to-image pipeline as a generator.

    Args:
        pipe: the pipeline (its progress bar is turned off).
        to_unit: maps the pipeline's ``output_type="pt"`` images to [0, 1].
        call_kwargs: pipeline arguments of every call (``num_inference_steps``, ``guidance_scale``, ``height``, ...).
        info: what :meth:`info` returns (model, revision, LoRA, sampler, steps, guidance, ...).
        encode: ``prompts -> {"prompt_embeds", "pooled_prompt_embeds"}``: pass embeddings instead of text (FLUX with
            its text encoders outside the pipeline); ``embeds_dtype``: their dtype in the call.
        weights: a context manager factory entered around sampling (a LoRA module's eval mode and adapter dtype).
        batch_size: images per pipeline call.
    """

    def __init__(self, pipe, to_unit: Callable[[torch.Tensor], torch.Tensor], call_kwargs: dict | None = None,
                 info: dict | None = None, encode: Callable[[list[str]], dict] | None = None,
                 embeds_dtype: torch.dtype | None = None,
                 weights: Callable[[], contextlib.AbstractContextManager] | None = None, batch_size: int = 16):
        pipe.set_progress_bar_config(disable=True)
        self.pipe, self.to_unit = pipe, to_unit
        self.call_kwargs = dict(call_kwargs or {})
        self.extra_info = dict(info or {})
        self.encode, self.embeds_dtype = encode, embeds_dtype
        self.weights = weights or contextlib.nullcontext
        self.batch_size = int(batch_size)

    def _device(self):
        return getattr(self.pipe, "_execution_device", None) or torch.device("cpu")

    @torch.no_grad()
    def generate(self, prompts: list[str], seeds: list[int]) -> torch.Tensor:
        def batch(ps, ss):
            gens = seeded_generators(ss, self._device())
            if self.encode is None:
                out = self.pipe(list(ps), generator=gens, output_type="pt", **self.call_kwargs).images
            else:
                text = self.encode(list(ps))
                embeds = {k: v.to(self.embeds_dtype) if self.embeds_dtype is not None else v for k, v in text.items()}
                out = self.pipe(**embeds, num_images_per_prompt=1, generator=gens, output_type="pt",
                                **self.call_kwargs).images
            return self.to_unit(out).cpu()

        with self.weights():
            return batched(batch, prompts, seeds, self.batch_size)

    def info(self) -> dict:
        return dict(self.extra_info)


def kandinsky_pipeline(prior: dict, decoder: dict, image_encoder=None, image_processor=None):
    """``KandinskyV22CombinedPipeline`` from the parts of :data:`msdm.lora.bases.KANDINSKY_PRIOR_PARTS` (``prior``)
    and :data:`~msdm.lora.bases.KANDINSKY_DECODER_PARTS` (``decoder``)."""
    from diffusers import KandinskyV22CombinedPipeline

    return KandinskyV22CombinedPipeline(
        unet=decoder["unet"], scheduler=decoder["scheduler"], movq=decoder["movq"], prior_prior=prior["prior"],
        prior_image_encoder=image_encoder if image_encoder is not None else prior["image_encoder"],
        prior_text_encoder=prior["text_encoder"], prior_tokenizer=prior["tokenizer"],
        prior_scheduler=prior["scheduler"],
        prior_image_processor=image_processor if image_processor is not None else prior["image_processor"])


def load_lora_generator(paths: list[str], name: str, device: str = "cpu", dtype: torch.dtype = torch.float32,
                        base_models: dict | None = None, call_kwargs: dict | None = None,
                        batch_size: int = 16) -> StockPipelineGenerator:
    """The stock pipeline with the LoRA folder(s) ``paths`` loaded, as a generator (module docstring)."""
    from msdm.lora.bases import FLUX_PARTS, KANDINSKY_DECODER_PARTS, KANDINSKY_PRIOR_PARTS, load_parts
    from msdm.lora.published import KANDINSKY22_DECODER_ID, KANDINSKY22_PRIOR_ID
    from msdm.lora.save import load_model_lora
    from msdm.provenance import folder_revision

    base_models = base_models or {}
    metas = [(Path(d), json.loads((Path(d) / "msdm_lora.json").read_text())) for d in paths]
    info = {"model": f"{name} (LoRA)", "revision": ",".join(folder_revision(d) for d, _ in metas),
            "lora": [m for _, m in metas]}
    flux = [(d, m) for d, m in metas if m.get("format") == "diffusers-flux-lora"]
    if flux:
        if len(metas) != 1:
            raise ValueError(f"generator {name!r}: a FLUX LoRA is one folder, got {len(metas)}")
        from diffusers import FluxPipeline

        d, m = flux[0]
        base = base_models.get("flux") or m.get("base_model")
        pipe = FluxPipeline(**load_parts(FLUX_PARTS, base, dtype=dtype))
        pipe.load_lora_weights(str(d), weight_name=m.get("weight_name", "pytorch_lora_weights.safetensors"))
        info.update({"base_model": base, "sampler": "FlowMatchEulerDiscreteScheduler"})
        return StockPipelineGenerator(pipe.to(device), flux_to_unit, call_kwargs, info, batch_size=batch_size)
    stages = {m.get("stage"): (d, m) for d, m in metas}
    if set(stages) - {"prior", "decoder"} or len(stages) != len(metas):
        raise ValueError(f"generator {name!r}: expected one Kandinsky prior and/or one decoder LoRA folder, got "
                         f"stages {[m.get('stage') for _, m in metas]}")
    prior_base = base_models.get("prior") or stages.get("prior", (None, {}))[1].get("base_model") or KANDINSKY22_PRIOR_ID
    decoder_base = (base_models.get("decoder") or stages.get("decoder", (None, {}))[1].get("base_model")
                    or KANDINSKY22_DECODER_ID)
    p = load_parts(KANDINSKY_PRIOR_PARTS, prior_base, dtype=dtype)
    d = load_parts(KANDINSKY_DECODER_PARTS, decoder_base, dtype=dtype)
    if "prior" in stages:
        load_model_lora(p["prior"], stages["prior"][0])
    if "decoder" in stages:
        load_model_lora(d["unet"], stages["decoder"][0])
    info.update({"prior_model": prior_base, "decoder_model": decoder_base, "sampler": "DDPMScheduler",
                 "prior_sampler": "UnCLIPScheduler"})
    return StockPipelineGenerator(kandinsky_pipeline(p, d).to(device), kandinsky_to_unit, call_kwargs, info,
                                  batch_size=batch_size)
