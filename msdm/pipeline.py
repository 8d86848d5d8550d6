"""``MSDMPipeline``: prompt → text encoder → guided latent denoising → VAE decoder → images.

A diffusers :class:`~diffusers.DiffusionPipeline`, so ``save_pretrained`` / ``from_pretrained`` / ``.to()`` /
progress bars and scheduler swapping work as for any diffusers pipeline. A saved folder holds ``vae/``, ``unet/``
(safetensors + config), ``text_encoder/``, ``tokenizer/``, ``scheduler/`` and ``model_index.json``.

Saving is atomic (:func:`msdm.io.atomic_directory`): an interrupted export never leaves a folder that
``from_pretrained`` would accept.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput
from diffusers.utils.torch_utils import randn_tensor

from msdm.diffusion import REFERENCE_STEPS, make_sampler, sampler_name
from msdm.hub import pretrained_source, resolve
from msdm.io import atomic_directory
from msdm.models.text_encoder import PromptEncoder


class MSDMPipeline(DiffusionPipeline):
    """Text-to-image sampling with MSDM.

    Components: ``vae`` (:class:`msdm.models.vae.MSDMVAE` or any diffusers ``AutoencoderKL``-like model),
    ``unet`` (:class:`msdm.models.unet.MSDMUNet`), ``text_encoder`` + ``tokenizer`` (transformers), ``scheduler``
    (a diffusers scheduler: DDIM by default; swap with :meth:`set_sampler`).
    """

    model_cpu_offload_seq = "text_encoder->unet->vae"

    def __init__(self, vae, unet, text_encoder, tokenizer, scheduler, resolution: int = 256,
                 text_chunking: str = "none"):
        super().__init__()
        self.register_modules(vae=vae, unet=unet, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler)
        self.register_to_config(resolution=resolution, text_chunking=text_chunking)

    # ------------------------------------------------------------------ helpers
    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def set_sampler(self, name: str) -> MSDMPipeline:
        """Swap the sampler (``ddim``, ``dpm++``, ``dpm++sde``, ``ddpm``, ``euler``) keeping the trained noise schedule."""
        self.scheduler = make_sampler(name, dict(self.scheduler.config))
        return self

    @torch.no_grad()
    def encode_prompts(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token states and mask, encoded as the U-Net was trained (``text_chunking``: whole prompts or sentence by
        sentence, :class:`~msdm.models.text_encoder.PromptEncoder`)."""
        chunking = getattr(self.config, "text_chunking", "none")  # folders saved before the option: whole prompts
        return PromptEncoder(self.tokenizer, self.text_encoder, chunking=chunking, memo_size=0)(
            list(prompts), device=self._execution_device)

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents → images in [0, 1]: ``(x + 1) / 2`` and clamp. Never per-image min–max stretching (the
        reference's ``normalize`` did that, which inflates contrast and biases FID)."""
        scale = getattr(self.vae.config, "scaling_factor", 1.0) or 1.0
        # the VAE may be held in another dtype than the U-Net (a bf16 frozen VAE next to an fp32 U-Net)
        x = self.vae.decode((latents / scale).to(self.vae.dtype)).sample
        return ((x.float() + 1) / 2).clamp(0, 1)

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        num_images_per_prompt: int = 1,
        guidance_scale: float = 4.5,
        num_inference_steps: int = REFERENCE_STEPS,
        generator: torch.Generator | list[torch.Generator] | None = None,
        height: int | None = None,
        width: int | None = None,
        eta: float = 1.0,
        negative_prompt: str | list[str] | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
    ):
        """Generate ``len(prompt) * num_images_per_prompt`` images, prompt-major.

        ``guidance_scale`` is in diffusers' convention ``uncond + s·(cond − uncond)``; 4.5 equals the reference's
        3.5 (see :mod:`msdm.diffusion`). ``guidance_scale <= 1`` disables guidance (one network call per step).
        ``eta`` is used by DDIM only (1.0 = the reference's stochastic DDIM). ``output_type``: ``"pil"``,
        ``"np"`` (float [N, H, W, C] in [0, 1]), ``"pt"`` (float [N, C, H, W] in [0, 1]) or ``"latent"`` (the
        denoised latents [N, c, h, w] in the U-Net's scaled space, not decoded; as diffusers' pipelines).
        """
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        prompts = [p for p in prompts for _ in range(num_images_per_prompt)]
        n = len(prompts)
        device = self._execution_device
        res = self.config.resolution
        height, width = height or res, width or res
        f = self.vae_scale_factor
        if height % f or width % f:
            raise ValueError(f"height and width must be multiples of the VAE factor {f}, got {height}×{width}")

        cond, cond_mask = self.encode_prompts(prompts)
        do_cfg = guidance_scale > 1.0
        if do_cfg:
            neg = [""] * n if negative_prompt is None else (
                [negative_prompt] * n if isinstance(negative_prompt, str)
                else [p for p in negative_prompt for _ in range(num_images_per_prompt)]
            )
            uncond, uncond_mask = self.encode_prompts(neg)
            states, mask = torch.cat([uncond, cond]), torch.cat([uncond_mask, cond_mask])
        else:
            states, mask = cond, cond_mask

        shape = (n, self.unet.config.in_channels, height // f, width // f)
        dtype = self.unet.dtype
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        latents = latents.to(device=device, dtype=dtype) * self.scheduler.init_noise_sigma

        self.scheduler.set_timesteps(num_inference_steps, device=device)
        step_kwargs = {}
        if "eta" in self.scheduler.step.__code__.co_varnames:
            step_kwargs["eta"] = eta
        if "generator" in self.scheduler.step.__code__.co_varnames:
            step_kwargs["generator"] = generator
        states, mask = states.to(dtype), mask.to(device)
        for t in self.progress_bar(self.scheduler.timesteps):
            x_in = torch.cat([latents] * 2) if do_cfg else latents
            x_in = self.scheduler.scale_model_input(x_in, t)
            eps = self.unet(x_in, t, states, mask).sample
            if do_cfg:
                eps_u, eps_c = eps.chunk(2)
                eps = eps_u + guidance_scale * (eps_c - eps_u)
            latents = self.scheduler.step(eps, t, latents, **step_kwargs).prev_sample

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
        with atomic_directory(save_directory) as tmp:
            super().save_pretrained(tmp, safe_serialization=safe_serialization, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        # diffusers resolves custom components only from modules that are already imported (it will not import a
        # module a repository names, as that would run its code): import ours explicitly.
        import msdm.models.unet  # noqa: F401
        import msdm.models.vae  # noqa: F401

        path, lfo = resolve(pretrained_model_name_or_path, kwargs.pop("local_files_only", None))
        kwargs.setdefault("use_safetensors", True)  # never unpickle weights
        with pretrained_source(pretrained_model_name_or_path, "MSDM pipeline"):
            return super().from_pretrained(path, local_files_only=lfo, **kwargs)


def images_to_uint8(images: torch.Tensor) -> np.ndarray:
    """float [N, C, H, W] in [0, 1] → uint8 [N, H, W, C] (round half up, as PIL does)."""
    return (images.clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy() * 255 + 0.5).astype(np.uint8)
