"""The synthetic-scene renderers as :class:`~msdm.generators.base.Generator` s: generators whose adherence is known.

Modes (image ``i`` drawn from ``np.random.default_rng(seeds[i])``, so the same seed gives the same texture whatever
the prompt):

* ``follow`` / ``contradict`` — a scene with the facts the prompt states, or with each of them negated
  (:func:`msdm.synthetic.prompt_render.render_for_prompt`; the utility experiment's ``--generator render:follow`` /
  ``render:contradict``: the ceiling of what synthetic images can add, and images that must show up as harm);
* ``scenes`` — a scene drawn with every fact of the full prompt grammar (:mod:`msdm.synthetic.prompt_scenes`): the
  perfect generator the adherence metrics are checked against;
* ``ignore`` — the prompt plays no part (a generator whose text pathway is cut: paired adherence gap exactly 0).
"""

from __future__ import annotations

import numpy as np
import torch

from msdm.generators.base import SEED_RULE
from msdm.synthetic.prompt_render import RENDER_MODES, render_for_prompt
from msdm.synthetic.prompt_scenes import render_ignoring_prompt, render_prompt_scene

MODES = (*RENDER_MODES, "scenes", "ignore")
_NOTES = {"follow": "scenes drawn with the facts the prompt states",
          "contradict": "scenes drawn with every fact the prompt states negated",
          "scenes": "scenes drawn with every fact of the prompt grammar (msdm.synthetic.prompt_scenes)",
          "ignore": "scenes drawn from the seed alone; the prompt plays no part"}


class RenderGenerator:
    """Renders of synthetic scenes for prompts (module docstring); ``resolution``: image side in pixels."""

    def __init__(self, mode: str = "follow", resolution: int = 64):
        if mode not in MODES:
            raise ValueError(f"render mode must be one of {MODES}, got {mode!r}")
        self.mode, self.resolution = mode, int(resolution)

    def render(self, prompt: str, seed: int) -> np.ndarray:
        """uint8 ``[H, W, 3]`` of one image."""
        if self.mode == "scenes":
            return render_prompt_scene(prompt, seed, self.resolution)
        if self.mode == "ignore":
            return render_ignoring_prompt(seed, self.resolution)
        return render_for_prompt(prompt, int(seed), self.resolution, self.mode)

    def generate(self, prompts: list[str], seeds: list[int]) -> torch.Tensor:
        if not len(prompts):
            return torch.zeros(0, 3, self.resolution, self.resolution)
        imgs = [torch.from_numpy(self.render(p, s)).permute(2, 0, 1) for p, s in zip(prompts, seeds)]
        return torch.stack(imgs).float() / 255.0

    def info(self) -> dict:
        return {"model": f"render:{self.mode}", "revision": "msdm.synthetic", "sampler": "render_scene", "steps": 0,
                "guidance_scale": None, "resolution": self.resolution, "note": _NOTES[self.mode],
                "seed_rule": SEED_RULE}
