"""How much does the text move the denoiser? A cheap diagnostic of the conditioning pathway.

A text-to-image U-Net whose prompt is ignored passes every shape test and still trains to a low loss: it learns the
unconditional distribution. The symptom is visible in the network's output long before any image is sampled: on
the same noisy latent and timestep, ε-predictions for different prompts are nearly identical. This module measures
that, on fixed latents, noise and timesteps:

* ``vs_uncond``: mean over prompts of ‖ε(x_t, t, p) − ε(x_t, t, ∅)‖ / ‖ε(x_t, t, ∅)‖ — how far a prompt moves the
  prediction away from the unconditional one (what classifier-free guidance amplifies; CFG with scale s moves the
  sample by (s − 1) times this difference);
* ``between_prompts``: mean over prompt pairs of ‖ε(p) − ε(q)‖ / ‖ε(∅)‖ — whether *different* prompts ask for
  different things (a model can move away from ∅ by the same amount for every prompt, which is no adherence).

Both are relative L2 norms over the whole batch, per timestep and averaged over timesteps. On the landed quickstart
(800 steps, one caption of ~10 per step) they were 0.2–1.6 % at t = 900…50 (issue 10); a model that follows its
prompts shows tens of percent at mid timesteps (docs/benchmarks.md, "Prompt adherence").
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import torch

DEFAULT_TIMESTEPS: tuple[int, ...] = (50, 300, 600, 900)


@torch.no_grad()
def prompt_sensitivity(
    unet,
    latents: torch.Tensor,
    encode: Callable[[list[str]], tuple[torch.Tensor, torch.Tensor]],
    prompts: Sequence[str],
    scheduler,
    timesteps: Sequence[int] = DEFAULT_TIMESTEPS,
    seed: int = 0,
) -> dict[str, float]:
    """Relative prediction differences (see the module docstring) of ``unet`` on ``latents`` [B, C, h, w].

    ``encode(prompts) -> (states [N, L, D], mask [N, L])`` is the text encoder (e.g. ``MSDMUNetModule.encode_prompts``);
    ``scheduler`` the training noise scheduler (``add_noise``). The noise is drawn once from ``seed``, so successive
    calls during training compare like with like. Returns ``vs_uncond``, ``between_prompts`` (means over
    ``timesteps``) and ``vs_uncond@t`` / ``between_prompts@t`` per timestep.
    """
    if len(prompts) < 2:
        raise ValueError("prompt_sensitivity needs at least 2 prompts (it also compares prompts with each other)")
    b = latents.shape[0]
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(latents.shape, generator=g).to(latents.device, latents.dtype)
    states, mask = encode(["", *prompts])
    out: dict[str, float] = {}
    for t in timesteps:
        tt = torch.full((b,), int(t), device=latents.device, dtype=torch.long)
        x_t = scheduler.add_noise(latents, noise, tt)
        eps = []
        for i in range(len(prompts) + 1):  # one prompt at a time: the batch is the latents, as in training
            s = states[i : i + 1].expand(b, -1, -1)
            m = mask[i : i + 1].expand(b, -1)
            eps.append(unet(x_t, tt, s, m).sample.float())
        ref = eps[0].norm().clamp(min=1e-12)
        vs = [float((e - eps[0]).norm() / ref) for e in eps[1:]]
        between = [float((eps[i] - eps[j]).norm() / ref) for i, j in itertools.combinations(range(1, len(eps)), 2)]
        out[f"vs_uncond@{t}"] = sum(vs) / len(vs)
        out[f"between_prompts@{t}"] = sum(between) / len(between)
    out["vs_uncond"] = sum(out[f"vs_uncond@{t}"] for t in timesteps) / len(timesteps)
    out["between_prompts"] = sum(out[f"between_prompts@{t}"] for t in timesteps) / len(timesteps)
    return out
