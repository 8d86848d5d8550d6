"""A training module (anything with the generator methods of docs/CONVENTIONS.md) as a
:class:`~msdm.generators.base.Generator`: what the metric, adherence and sample-grid callbacks and ``msdm predict``
call, for MSDM, Kandinsky and FLUX modules alike."""

from __future__ import annotations

import torch


class ModuleGenerator:
    """``module.generate_with_seeds(prompts, seeds, **sampling)`` and ``module.generation_info()``.

    ``sampling``: overrides of the module's sampling defaults (``num_inference_steps``, ``guidance_scale``,
    ``sampler``, ...), passed on every call.
    """

    def __init__(self, module, **sampling):
        if not hasattr(module, "generate_with_seeds"):
            raise TypeError(f"{type(module).__name__} has no generate_with_seeds(prompts, seeds): not a generator module")
        self.module, self.sampling = module, dict(sampling)

    @torch.no_grad()
    def generate(self, prompts: list[str], seeds: list[int]) -> torch.Tensor:
        if not len(prompts):
            return torch.zeros(0, 3, 1, 1)
        return self.module.generate_with_seeds(list(prompts), [int(s) for s in seeds], **self.sampling)

    def info(self) -> dict:
        info = self.module.generation_info() if hasattr(self.module, "generation_info") else {}
        steps = self.sampling.get("num_inference_steps")
        return {**info, **({"steps": steps} if steps else {})}
