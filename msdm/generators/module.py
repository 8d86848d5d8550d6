"""A training module (anything with the generator methods of docs/CONVENTIONS.md) as a
:class:`~msdm.generators.base.Generator`: what the metric, adherence and sample-grid callbacks and ``msdm predict``
call, for MSDM, Kandinsky and FLUX modules alike."""

from __future__ import annotations

import torch


def is_generator_module(module) -> bool:
    """Whether ``module`` offers the generator methods (``generate_with_seeds``, or at least ``generate``)."""
    return hasattr(module, "generate_with_seeds") or hasattr(module, "generate")


def _seed_runs(seeds: list[int]) -> list[tuple[int, int]]:
    """``[(start, end), ...]`` index ranges over which ``seeds`` count up by one."""
    runs, start = [], 0
    for i in range(1, len(seeds) + 1):
        if i == len(seeds) or seeds[i] != seeds[i - 1] + 1:
            runs.append((start, i))
            start = i
    return runs


class ModuleGenerator:
    """``module.generate_with_seeds(prompts, seeds, **sampling)`` and ``module.generation_info()``.

    ``sampling``: overrides of the module's sampling defaults (``num_inference_steps``, ``guidance_scale``,
    ``sampler``, ...), passed on every call. A module with only ``generate(prompts, num_images_per_prompt, seed)``
    (which seeds image ``k`` with ``seed + k``, docs/CONVENTIONS.md) is called once per run of consecutive seeds.
    """

    def __init__(self, module, **sampling):
        if not is_generator_module(module):
            raise TypeError(f"{type(module).__name__} has neither generate_with_seeds(prompts, seeds) nor "
                            "generate(prompts, num_images_per_prompt, seed): not a generator module")
        self.module, self.sampling = module, dict(sampling)

    @torch.no_grad()
    def generate(self, prompts: list[str], seeds: list[int]) -> torch.Tensor:
        if not len(prompts):
            return torch.zeros(0, 3, 1, 1)
        prompts, seeds = list(prompts), [int(s) for s in seeds]
        if hasattr(self.module, "generate_with_seeds"):
            return self.module.generate_with_seeds(prompts, seeds, **self.sampling)
        return torch.cat([self.module.generate(prompts[a:b], num_images_per_prompt=1, seed=seeds[a], **self.sampling)
                          for a, b in _seed_runs(seeds)])

    def info(self) -> dict:
        info = self.module.generation_info() if hasattr(self.module, "generation_info") else {}
        steps = self.sampling.get("num_inference_steps")
        return {**info, **({"steps": steps} if steps else {})}
