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
from diffusers import AutoencoderKL, DiffusionPipeline, ImagePipelineOutput
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils.torch_utils import randn_tensor
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from msdm.diffusion import REFERENCE_STEPS
from msdm.generators.samplers import make_sampler, sampler_name
from msdm.generators.writer import images_to_uint8  # noqa: F401 - re-exported (its home is the writer)
from msdm.hub import pretrained_source, resolve
from msdm.io import atomic_directory
from msdm.models.text_encoder import PromptEncoder
from msdm.models.unet import MSDMUNet
from msdm.models.vae import MSDMVAE
from msdm.pipeline_registration import register_with_diffusers

LOAD_HINT = ("from msdm.pipeline import MSDMPipeline; MSDMPipeline.from_pretrained(folder)  (or import msdm.pipeline "
             "before diffusers.DiffusionPipeline.from_pretrained(folder))")


_MASK_NEEDED = ("{name}_embeds were given without {name}_attention_mask: MSDM's U-Net masks the padding tokens, "
                "so embeddings without their mask give other images. Take both from pipe.encode_prompt(...) (or pass "
                "a mask of ones if every token is real)")


class MSDMPipeline(DiffusionPipeline):
    """Text-to-image sampling with MSDM.

    Components: ``vae`` (:class:`msdm.models.vae.MSDMVAE` or any diffusers ``AutoencoderKL``-like model),
    ``unet`` (:class:`msdm.models.unet.MSDMUNet`), ``text_encoder`` + ``tokenizer`` (transformers), ``scheduler``
    (a diffusers scheduler: DDIM by default; swap with :meth:`set_sampler`), and optionally ``guide_unet``: the
    weaker U-Net of autoguidance (an early EMA of the same run). A pipeline that has one samples with autoguidance
    by default (``autoguidance=False`` in the call: classifier-free guidance).
    """

    model_cpu_offload_seq = "text_encoder->unet->guide_unet->vae"
    _callback_tensor_inputs = ["latents", "prompt_embeds", "negative_prompt_embeds"]
    # the weaker U-Net of autoguidance (a run's early EMA weights, ``MSDMUNetModule(autoguidance=...)``); folders
    # without it load as before
    _optional_components = ["guide_unet"]

    # Typed: diffusers reads the component types from this signature (from_pipe keeps a model component only when
    # its type is the one named here; untyped, from_pipe dropped unet and vae).
    def __init__(self, vae: MSDMVAE | AutoencoderKL, unet: MSDMUNet, text_encoder: PreTrainedModel,
                 tokenizer: PreTrainedTokenizerBase, scheduler: SchedulerMixin, resolution: int = 256,
                 text_chunking: str = "none", guidance_scale: float = 4.5,
                 guidance_interval: tuple[float, float] | list[float] | None = None,
                 guide_unet: MSDMUNet | None = None):
        super().__init__()
        self.register_modules(vae=vae, unet=unet, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler,
                              guide_unet=guide_unet)
        # guidance_scale (and guidance_interval): the defaults of __call__, saved with the folder, so that a pipeline
        # exported from a run samples with the guidance it was validated at unless told otherwise
        self.register_to_config(resolution=resolution, text_chunking=text_chunking, guidance_scale=float(guidance_scale),
                                guidance_interval=_interval(guidance_interval))

    # ------------------------------------------------------------------ helpers
    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    # diffusers' VAE memory switches (as StableDiffusionPipeline has them): see MSDMVAE
    def enable_vae_slicing(self) -> None:
        """Decode (and encode) a batch one image at a time: less memory, the same images."""
        self.vae.enable_slicing()

    def disable_vae_slicing(self) -> None:
        self.vae.disable_slicing()

    def enable_vae_tiling(self) -> None:
        """Decode in overlapping tiles (blended): large images in little memory, approximately the same images."""
        self.vae.enable_tiling()

    def disable_vae_tiling(self) -> None:
        self.vae.disable_tiling()

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
        get the images of the prompt path exactly. Embeddings without their mask are refused (as PixArt's and Sana's
        pipelines do): attending to padding tokens silently gives other images.
        """
        device = self._execution_device
        if prompt_embeds is None:
            if prompt is None:
                raise ValueError("pass prompt or prompt_embeds")
            prompts = [prompt] if isinstance(prompt, str) else list(prompt)
            prompt_embeds, prompt_attention_mask = self.encode_prompts(prompts)
        elif prompt_attention_mask is None:
            raise ValueError(_MASK_NEEDED.format(name="prompt"))
        batch = prompt_embeds.shape[0]
        if do_classifier_free_guidance and negative_prompt_embeds is None:
            neg = [""] * batch if negative_prompt is None else (
                [negative_prompt] * batch if isinstance(negative_prompt, str) else list(negative_prompt))
            if len(neg) != batch:
                raise ValueError(f"{len(neg)} negative prompts for {batch} prompts")
            negative_prompt_embeds, negative_prompt_attention_mask = self.encode_prompts(neg)
        elif negative_prompt_embeds is not None and negative_prompt_attention_mask is None:
            raise ValueError(_MASK_NEEDED.format(name="negative_prompt"))
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
        autoguidance: bool | None = None,
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
        the unconditional branch: ``bad + s·(good − bad)``; ``negative_prompt`` is then unused. ``autoguidance``:
        ``None`` guides with the pipeline's own ``guide_unet`` component when it has one (else CFG), ``False`` always
        uses classifier-free guidance, ``True`` requires a weaker U-Net (the argument or the component).
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
        if autoguidance is False:
            guide_unet = None
        elif guide_unet is None:
            guide_unet = getattr(self, "guide_unet", None)
            if autoguidance and guide_unet is None:
                raise ValueError("autoguidance=True needs a weaker U-Net: pass guide_unet=... or export a run trained "
                                 "with MSDMUNetModule(autoguidance=...)")
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
        info = {"sampler": sampler_name(self.scheduler)}
        if getattr(self, "guide_unet", None) is not None:
            info["guidance"] = "autoguidance (the folder's guide_unet)"
        return info

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

        _check_local_folder(pretrained_model_name_or_path)
        path, lfo = resolve(pretrained_model_name_or_path, kwargs.pop("local_files_only", None), what="MSDM pipeline")
        # safetensors when the folder has them, else the .bin files a save_pretrained(safe_serialization=False)
        # writes — as diffusers' own loader does; .bin is read with torch.load(weights_only=True) (tensors only,
        # no arbitrary unpickling) by diffusers and transformers.
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


def _check_local_folder(source) -> None:
    """A local path that is a file, or a folder without ``model_index.json``, is one line naming the fix (diffusers
    would say "neither a valid local path nor a valid repo id" with a traceback)."""
    from pathlib import Path

    from msdm.errors import InputError

    p = Path(os.path.expanduser(str(source)))
    if p.is_file():
        raise InputError(f"{source} is a file, not an MSDM pipeline folder: give the folder msdm export or msdm "
                         "quickstart wrote (it holds model_index.json)")
    if p.is_dir() and not (p / "model_index.json").is_file():
        raise InputError(f"{source} is a folder without model_index.json, not an MSDM pipeline folder: give the "
                         "folder msdm export or msdm quickstart wrote (e.g. msdm_quickstart/pipeline)")


def _interval(value) -> tuple[float, float] | None:
    """``(lo, hi)`` of a guidance interval in training timesteps, or None; a clear error for anything else."""
    if value is None:
        return None
    lo, hi = (float(v) for v in value)
    if not lo <= hi:
        raise ValueError(f"guidance_interval must be (lo, hi) with lo <= hi in training timesteps, got {value!r}")
    return lo, hi


# diffusers finds MSDMPipeline by name (DiffusionPipeline / AutoPipelineForText2Image.from_pretrained of a folder)
register_with_diffusers(MSDMPipeline)


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
