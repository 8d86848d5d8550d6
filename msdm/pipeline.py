"""``MSDMPipeline``: prompt → text encoder → guided latent denoising → VAE decoder → images.

A diffusers :class:`~diffusers.DiffusionPipeline`, so ``save_pretrained`` / ``from_pretrained`` / ``.to()`` /
progress bars and scheduler swapping work as for any diffusers pipeline. A saved folder holds ``vae/``, ``unet/``
(safetensors + config), ``text_encoder/``, ``tokenizer/``, ``scheduler/`` and ``model_index.json``.

Saving is atomic (:func:`msdm.io.atomic_directory`): an interrupted export never leaves a folder that
``from_pretrained`` would accept.

Loading: ``MSDMPipeline.from_pretrained(folder)`` always works (it imports the custom U-Net and VAE classes).
``diffusers.DiffusionPipeline.from_pretrained(folder)`` works too once this module is imported (it registers the
class with diffusers); in a fresh interpreter without msdm diffusers cannot know the class and says
``module diffusers has no attribute MSDMPipeline`` — ``model_index.json`` names the fix under ``_load_with``.
``__call__`` takes diffusers' standard ``prompt_embeds`` / ``negative_prompt_embeds`` and ``callback_on_step_end``.
"""

from __future__ import annotations

import os

import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput
from diffusers.utils.torch_utils import randn_tensor

from msdm.diffusion import REFERENCE_STEPS
from msdm.generators.samplers import make_sampler, sampler_name
from msdm.generators.writer import images_to_uint8  # noqa: F401 - re-exported (its home is the writer)
from msdm.hub import pretrained_source, resolve
from msdm.io import atomic_directory
from msdm.models.text_encoder import PromptEncoder

LOAD_HINT = ("from msdm.pipeline import MSDMPipeline; MSDMPipeline.from_pretrained(folder)  (or import msdm.pipeline "
             "before diffusers.DiffusionPipeline.from_pretrained(folder))")


class MSDMPipeline(DiffusionPipeline):
    """Text-to-image sampling with MSDM.

    Components: ``vae`` (:class:`msdm.models.vae.MSDMVAE` or any diffusers ``AutoencoderKL``-like model),
    ``unet`` (:class:`msdm.models.unet.MSDMUNet`), ``text_encoder`` + ``tokenizer`` (transformers), ``scheduler``
    (a diffusers scheduler: DDIM by default; swap with :meth:`set_sampler`).
    """

    model_cpu_offload_seq = "text_encoder->unet->vae"
    _callback_tensor_inputs = ["latents", "prompt_embeds", "negative_prompt_embeds"]

    def __init__(self, vae, unet, text_encoder, tokenizer, scheduler, resolution: int = 256,
                 text_chunking: str = "none", guidance_scale: float = 4.5,
                 guidance_interval: tuple[float, float] | list[float] | None = None):
        super().__init__()
        self.register_modules(vae=vae, unet=unet, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler)
        # guidance_scale (and guidance_interval): the defaults of __call__, saved with the folder, so that a pipeline
        # exported from a run samples with the guidance it was validated at unless told otherwise
        self.register_to_config(resolution=resolution, text_chunking=text_chunking, guidance_scale=float(guidance_scale),
                                guidance_interval=_interval(guidance_interval))

    # ------------------------------------------------------------------ helpers
    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def set_sampler(self, name: str) -> MSDMPipeline:
        """Swap the sampler (a name of the registry :mod:`msdm.generators.samplers`: ``ddim``, ``dpm++``, ``dpm++sde``,
        ...) keeping the trained noise schedule."""
        self.scheduler = make_sampler(name, dict(self.scheduler.config))
        return self

    @torch.no_grad()
    def encode_prompts(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token states and mask, encoded as the U-Net was trained (``text_chunking``: whole prompts or sentence by
        sentence, :class:`~msdm.models.text_encoder.PromptEncoder`)."""
        chunking = getattr(self.config, "text_chunking", "none")  # folders saved before the option: whole prompts
        return PromptEncoder(self.tokenizer, self.text_encoder, chunking=chunking, memo_size=0)(
            list(prompts), device=self._execution_device)

    @torch.no_grad()
    def encode_prompt(
        self,
        prompt: str | list[str] | None,
        num_images_per_prompt: int = 1,
        do_classifier_free_guidance: bool = True,
        negative_prompt: str | list[str] | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        prompt_attention_mask: torch.Tensor | None = None,
        negative_prompt_attention_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """diffusers' ``encode_prompt``: ``(prompt_embeds, prompt_attention_mask, negative_prompt_embeds,
        negative_prompt_attention_mask)``, each repeated ``num_images_per_prompt`` times (prompt-major).

        MSDM's U-Net attends to the token states with a padding mask (tokens after the prompt are masked out), so
        the masks belong to the embeddings: pass the ones returned here back to ``__call__`` with the embeddings to
        get the images of the prompt path exactly. Embeddings given without a mask attend to every token.
        """
        device = self._execution_device
        if prompt_embeds is None:
            if prompt is None:
                raise ValueError("pass prompt or prompt_embeds")
            prompts = [prompt] if isinstance(prompt, str) else list(prompt)
            prompt_embeds, prompt_attention_mask = self.encode_prompts(prompts)
        elif prompt_attention_mask is None:
            prompt_attention_mask = torch.ones(prompt_embeds.shape[:2], dtype=torch.long, device=device)
        batch = prompt_embeds.shape[0]
        if do_classifier_free_guidance and negative_prompt_embeds is None:
            neg = [""] * batch if negative_prompt is None else (
                [negative_prompt] * batch if isinstance(negative_prompt, str) else list(negative_prompt))
            if len(neg) != batch:
                raise ValueError(f"{len(neg)} negative prompts for {batch} prompts")
            negative_prompt_embeds, negative_prompt_attention_mask = self.encode_prompts(neg)
        elif negative_prompt_embeds is not None and negative_prompt_attention_mask is None:
            negative_prompt_attention_mask = torch.ones(negative_prompt_embeds.shape[:2], dtype=torch.long,
                                                        device=device)
        if negative_prompt_embeds is not None and negative_prompt_embeds.shape != prompt_embeds.shape:
            raise ValueError(f"prompt_embeds {tuple(prompt_embeds.shape)} and negative_prompt_embeds "
                             f"{tuple(negative_prompt_embeds.shape)} must have the same shape")

        def repeat(x):
            return None if x is None else x.to(device).repeat_interleave(num_images_per_prompt, dim=0)

        return (repeat(prompt_embeds), repeat(prompt_attention_mask), repeat(negative_prompt_embeds),
                repeat(negative_prompt_attention_mask))

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents → images in [0, 1]: ``(x + 1) / 2`` and clamp. Never per-image min–max stretching (the
        reference's ``normalize`` did that, which inflates contrast and biases FID)."""
        scale = getattr(self.vae.config, "scaling_factor", 1.0) or 1.0
        # the VAE may be held in another dtype than the U-Net (a bf16 frozen VAE next to an fp32 U-Net)
        x = self.vae.decode((latents / scale).to(self.vae.dtype)).sample
        return ((x.float() + 1) / 2).clamp(0, 1)

    # diffusers' pipeline properties, read by callbacks (diffusers.callbacks) and progress displays
    @property
    def guidance_scale(self) -> float:
        return self._guidance_scale

    @property
    def do_classifier_free_guidance(self) -> bool:
        return self._guidance_scale > 1.0

    @property
    def num_timesteps(self) -> int:
        return self._num_timesteps

    @property
    def interrupt(self) -> bool:
        return self._interrupt

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        num_images_per_prompt: int = 1,
        guidance_scale: float | None = None,
        num_inference_steps: int = REFERENCE_STEPS,
        generator: torch.Generator | list[torch.Generator] | None = None,
        height: int | None = None,
        width: int | None = None,
        eta: float = 1.0,
        negative_prompt: str | list[str] | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        prompt_attention_mask: torch.Tensor | None = None,
        negative_prompt_attention_mask: torch.Tensor | None = None,
        callback_on_step_end=None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
        guidance_rescale: float = 0.0,
        guidance_interval: tuple[float, float] | list[float] | None = None,
        guide_unet=None,
    ):
        """Generate ``len(prompt) * num_images_per_prompt`` images, prompt-major.

        ``guidance_scale`` is in diffusers' convention ``uncond + s·(cond − uncond)``; 4.5 equals the reference's
        3.5 (see :mod:`msdm.diffusion`). ``guidance_scale <= 1`` disables guidance (one network call per step).
        ``None`` takes the folder's ``config.guidance_scale`` (what the run that exported it sampled with; 4.5 for
        folders saved before the option).
        ``eta`` is used by DDIM only (1.0 = the reference's stochastic DDIM). ``output_type``: ``"pil"``,
        ``"np"`` (float [N, H, W, C] in [0, 1]), ``"pt"`` (float [N, C, H, W] in [0, 1]) or ``"latent"`` (the
        denoised latents [N, c, h, w] in the U-Net's scaled space, not decoded; as diffusers' pipelines).

        diffusers' standard arguments: ``prompt_embeds`` / ``negative_prompt_embeds`` instead of text (with their
        ``*_attention_mask``, see :meth:`encode_prompt`), and ``callback_on_step_end(pipe, step, timestep,
        callback_kwargs) -> dict`` called after every step with the tensors named in
        ``callback_on_step_end_tensor_inputs`` (``latents``, ``prompt_embeds``, ``negative_prompt_embeds``); the dict
        it returns replaces them (a :class:`diffusers.callbacks.PipelineCallback` works too). Setting
        ``pipe._interrupt = True`` from a callback stops the loop after that step.

        Guidance that costs less realism (docs/benchmarks.md, Real frames, has the measured effect of each):
        ``guidance_interval=(lo, hi)`` applies guidance only at training timesteps ``lo <= t <= hi`` (Kynkäänniemi
        et al. 2024, "Applying guidance in a limited interval improves sample and distribution quality": guidance at
        high noise collapses diversity, at low noise it only sharpens; outside the interval one conditional pass
        per step). ``None`` takes the folder's ``config.guidance_interval`` (none: every step).
        ``guidance_rescale`` rescales the guided output to the conditional output's std (Lin et al. 2024 §3.4; diffusers'
        ``rescale_noise_cfg``): against over-exposure at high guidance with v-prediction.
        ``guide_unet``: **autoguidance** (Karras et al. 2024, "Guiding a diffusion model with a bad version of
        itself"): a weaker U-Net of the same model (e.g. an early checkpoint), evaluated on the same prompt, replaces
        the unconditional branch: ``bad + s·(good − bad)``; ``negative_prompt`` is then unused.
        """
        from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback

        if (prompt is None) == (prompt_embeds is None):
            raise ValueError("pass exactly one of prompt and prompt_embeds")
        if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks)):
            callback_on_step_end_tensor_inputs = callback_on_step_end.tensor_inputs
        tensor_inputs = list(callback_on_step_end_tensor_inputs or ["latents"])
        unknown = [k for k in tensor_inputs if k not in self._callback_tensor_inputs]
        if unknown:
            raise ValueError(f"callback_on_step_end_tensor_inputs {unknown} not in {self._callback_tensor_inputs}")
        if guidance_scale is None:
            guidance_scale = float(getattr(self.config, "guidance_scale", 4.5))
        if guidance_interval is None:
            guidance_interval = getattr(self.config, "guidance_interval", None)
        lo, hi = _interval(guidance_interval) or (float("-inf"), float("inf"))
        autoguide = guide_unet is not None and guidance_scale != 1.0
        # autoguidance needs no unconditional branch: guidance is against the weaker model, on the same prompt
        self._guidance_scale, self._interrupt = (1.0 if autoguide else guidance_scale), False
        device = self._execution_device
        res = self.config.resolution
        height, width = height or res, width or res
        f = self.vae_scale_factor
        if height % f or width % f:
            raise ValueError(f"height and width must be multiples of the VAE factor {f}, got {height}×{width}")

        do_cfg = self.do_classifier_free_guidance
        prompt_embeds, prompt_attention_mask, negative_prompt_embeds, negative_prompt_attention_mask = (
            self.encode_prompt(prompt, num_images_per_prompt, do_cfg, negative_prompt, prompt_embeds,
                               negative_prompt_embeds, prompt_attention_mask, negative_prompt_attention_mask))
        n = prompt_embeds.shape[0]
        dtype = self.unet.dtype

        def condition():
            if do_cfg:
                return (torch.cat([negative_prompt_embeds, prompt_embeds]).to(dtype),
                        torch.cat([negative_prompt_attention_mask, prompt_attention_mask]).to(device))
            return prompt_embeds.to(dtype), prompt_attention_mask.to(device)

        states, mask = condition()
        shape = (n, self.unet.config.in_channels, height // f, width // f)
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        latents = latents.to(device=device, dtype=dtype) * self.scheduler.init_noise_sigma

        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps
        self._num_timesteps = len(timesteps)
        step_kwargs = {}
        if "eta" in self.scheduler.step.__code__.co_varnames:
            step_kwargs["eta"] = eta
        if "generator" in self.scheduler.step.__code__.co_varnames:
            step_kwargs["generator"] = generator
        for i, t in enumerate(self.progress_bar(timesteps)):
            guided = lo <= float(t) <= hi
            if do_cfg and guided:
                x_in = self.scheduler.scale_model_input(torch.cat([latents] * 2), t)
                eps_u, eps_c = self.unet(x_in, t, states, mask).sample.chunk(2)
                eps = eps_u + guidance_scale * (eps_c - eps_u)
            else:
                # one conditional pass (no guidance, or a step outside the guidance interval)
                x_in = self.scheduler.scale_model_input(latents, t)
                cond_states, cond_mask = (states[n:], mask[n:]) if do_cfg else (states, mask)
                eps = eps_c = self.unet(x_in, t, cond_states, cond_mask).sample
                if autoguide and guided:
                    eps_bad = guide_unet(x_in, t, cond_states, cond_mask).sample
                    eps = eps_bad + guidance_scale * (eps_c - eps_bad)
            if guidance_rescale > 0 and eps is not eps_c:
                from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import rescale_noise_cfg

                eps = rescale_noise_cfg(eps, eps_c, guidance_rescale)
            latents = self.scheduler.step(eps, t, latents, **step_kwargs).prev_sample
            if callback_on_step_end is not None:
                local = {"latents": latents, "prompt_embeds": prompt_embeds,
                         "negative_prompt_embeds": negative_prompt_embeds}
                out = callback_on_step_end(self, i, t, {k: local[k] for k in tensor_inputs}) or {}
                latents = out.pop("latents", latents)
                if "prompt_embeds" in out or "negative_prompt_embeds" in out:
                    prompt_embeds = out.pop("prompt_embeds", prompt_embeds)
                    negative_prompt_embeds = out.pop("negative_prompt_embeds", negative_prompt_embeds)
                    states, mask = condition()
            if self._interrupt:
                break

        if output_type == "latent":
            self.maybe_free_model_hooks()
            return ImagePipelineOutput(images=latents) if return_dict else (latents,)
        images = self.decode_latents(latents)
        self.maybe_free_model_hooks()
        if output_type == "pt":
            out = images.cpu()
        else:
            out = images.permute(0, 2, 3, 1).cpu().numpy()
            if output_type == "pil":
                out = self.numpy_to_pil(out)
            elif output_type != "np":
                raise ValueError(f"output_type must be 'pil', 'np' or 'pt', got {output_type!r}")
        if not return_dict:
            return (out,)
        return ImagePipelineOutput(images=out)

    def generation_info(self) -> dict:
        return {"sampler": sampler_name(self.scheduler)}

    # ------------------------------------------------------------------ save / load
    def save_pretrained(self, save_directory: str | os.PathLike, safe_serialization: bool = True, **kwargs):
        """Atomic: write into a temporary sibling folder, then rename it into place."""
        import json

        with atomic_directory(save_directory) as tmp:
            super().save_pretrained(tmp, safe_serialization=safe_serialization, **kwargs)
            # for whoever opens the folder (diffusers ignores keys starting with "_")
            index = tmp / "model_index.json"
            config = json.loads(index.read_text())
            config["_load_with"] = LOAD_HINT
            index.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        # diffusers resolves custom components only from modules that are already imported (it will not import a
        # module a repository names, as that would run its code): import ours explicitly.
        from diffusers.utils import logging as diffusers_logging

        import msdm.models.unet  # noqa: F401
        import msdm.models.vae  # noqa: F401
        from msdm import progress

        path, lfo = resolve(pretrained_model_name_or_path, kwargs.pop("local_files_only", None), what="MSDM pipeline")
        kwargs.setdefault("use_safetensors", True)  # never unpickle weights
        # diffusers' "Loading pipeline components" bar follows msdm's progress setting (msdm --quiet)
        silence = not progress.is_enabled() and diffusers_logging.is_progress_bar_enabled()
        if silence:
            diffusers_logging.disable_progress_bar()
        try:
            with pretrained_source(pretrained_model_name_or_path, "MSDM pipeline"):
                return super().from_pretrained(path, local_files_only=lfo, **kwargs)
        finally:
            if silence:
                diffusers_logging.enable_progress_bar()


def _interval(value) -> tuple[float, float] | None:
    """``(lo, hi)`` of a guidance interval in training timesteps, or None; a clear error for anything else."""
    if value is None:
        return None
    lo, hi = (float(v) for v in value)
    if not lo <= hi:
        raise ValueError(f"guidance_interval must be (lo, hi) with lo <= hi in training timesteps, got {value!r}")
    return lo, hi


def _register_with_diffusers() -> None:
    """Make ``diffusers.MSDMPipeline`` resolve, so ``DiffusionPipeline.from_pretrained(folder)`` loads an exported
    folder once msdm's pipeline is imported (diffusers looks the ``_class_name`` of ``model_index.json`` up in its
    own namespace, and loads the components only from modules already imported). Nothing of diffusers is
    replaced; the name is added only if it is free."""
    import diffusers

    import msdm.models.unet  # noqa: F401 - the component classes model_index.json names
    import msdm.models.vae  # noqa: F401

    if getattr(diffusers, "_objects", None) is not None:  # diffusers' lazy module: looked up before the import map
        diffusers._objects.setdefault(MSDMPipeline.__name__, MSDMPipeline)
    if MSDMPipeline.__name__ not in vars(diffusers):
        setattr(diffusers, MSDMPipeline.__name__, MSDMPipeline)


_register_with_diffusers()


def load_generator(pipeline: str, sampler: str | None = None, steps: int | None = None,
                   guidance_scale: float | None = None, eta: float = 1.0, batch_size: int = 16,
                   device: str | None = None, dtype: str = "fp32", model_name: str | None = None):
    """A pipeline folder as a :class:`~msdm.generators.MSDMGenerator` with ``msdm generate``'s settings and
    provenance (``msdm generate``, ``msdm utility``): sampler, steps, guidance and η as the command's options
    (None = the folder's / the sampler's defaults); ``device`` default ``cuda:LOCAL_RANK`` when there is a GPU."""
    from pathlib import Path

    from msdm.dtypes import parse_dtype
    from msdm.generators import MSDMGenerator, default_device, env_rank_world
    from msdm.provenance import folder_revision

    pipe = MSDMPipeline.from_pretrained(pipeline, dtype=parse_dtype(dtype)).to(device or default_device(env_rank_world()[2]))
    pipe.set_progress_bar_config(disable=True)  # one bar over the images, not one per batch of steps
    # What reproduces an image besides its prompt and seed: the sampling settings plus the model. The revision is a
    # content hash of the pipeline folder (exported models have no hub revision); only the folder's name goes into
    # the images, never the local path.
    model = {"model": model_name or f"MSDM ({Path(pipeline).resolve().name})",
             "revision": folder_revision(pipeline) if Path(pipeline).is_dir() else str(pipeline)}
    return MSDMGenerator(pipe, sampler=sampler, steps=steps, guidance_scale=guidance_scale, eta=eta,
                         batch_size=batch_size, info=model)
