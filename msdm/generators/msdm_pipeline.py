"""MSDM as a :class:`~msdm.generators.base.Generator`: an :class:`~msdm.pipeline.MSDMPipeline` with its sampling
settings (``msdm generate``, ``msdm utility``, the U-Net module's ``generate``, the quickstart, the benches)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch

from msdm.generators.base import batched, seeded_generators
from msdm.generators.samplers import default_steps, sampler_name

GUIDANCE_CONVENTION = "diffusers: uncond + s*(cond - uncond)"


class MSDMGenerator:
    """Images from an MSDM pipeline, image ``i`` from its own generator seeded ``seeds[i]``.

    Args:
        pipe: an :class:`~msdm.pipeline.MSDMPipeline` (loaded from a folder, or built from a training module).
        sampler: swap the pipeline's sampler first (a name of :mod:`msdm.generators.samplers`; None = keep it).
        steps: sampling steps (None = the sampler's default: 150 for DDIM, 20 for DPM-Solver++).
        guidance_scale: diffusers' convention ``uncond + s·(cond − uncond)`` (None = the folder's
            ``config.guidance_scale``: what the run that exported it sampled with).
        eta: DDIM's η (1.0 = the reference); ``batch_size``: images per pipeline call.
        call_kwargs: further pipeline arguments; ``info``: extra provenance fields (model, revision, ...).
        weights: a context manager factory entered around sampling (a training module's EMA weights in eval mode).
    """

    def __init__(self, pipe, sampler: str | None = None, steps: int | None = None,
                 guidance_scale: float | None = None, eta: float = 1.0, batch_size: int = 16,
                 call_kwargs: dict | None = None, info: dict | None = None,
                 weights: Callable[[], contextlib.AbstractContextManager] | None = None):
        if sampler:
            pipe.set_sampler(sampler)
        self.pipe = pipe
        self.steps = int(steps or default_steps(pipe.scheduler))
        self.guidance_scale = float(pipe.config.guidance_scale if guidance_scale is None else guidance_scale)
        self.eta, self.batch_size = float(eta), int(batch_size)
        self.call_kwargs = dict(call_kwargs or {})
        self.extra_info = dict(info or {})
        self.weights = weights or contextlib.nullcontext

    def settings(self) -> dict:
        """The pipeline arguments every call uses."""
        return {"guidance_scale": self.guidance_scale, "num_inference_steps": self.steps, "eta": self.eta,
                **self.call_kwargs}

    @torch.no_grad()
    def generate(self, prompts: list[str], seeds: list[int]) -> torch.Tensor:
        device = self.pipe._execution_device
        settings = self.settings()

        def batch(ps, ss):
            return self.pipe(list(ps), generator=seeded_generators(ss, device), output_type="pt", **settings).images

        with self.weights():
            return batched(batch, prompts, seeds, self.batch_size)

    def info(self) -> dict:
        return {**self.extra_info, "sampler": sampler_name(self.pipe.scheduler), "steps": self.steps,
                "guidance_scale": self.guidance_scale, "guidance_convention": GUIDANCE_CONVENTION, "eta": self.eta}
