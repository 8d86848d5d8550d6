"""The generator contract: prompts and seeds in, images in [0, 1] out, and what reproduces them.

Every way msdm makes images — an exported MSDM pipeline, a training module, Kandinsky 2.2 or FLUX with LoRA, the
synthetic-scene renderers — is a :class:`Generator`. Image ``i`` is drawn for ``prompts[i]`` from its own seed
``seeds[i]`` (its own ``torch.Generator``), so an image never depends on the batch it was made in or on the rank that
made it: a 5 000-image evaluation sharded over 8 GPUs writes the same files as one process. Callers — ``msdm
generate``, ``msdm utility``, ``msdm predict``, the metric and sample-grid callbacks, the adherence metrics — only use
this contract.

Seeds of a prompt list: image ``k`` of the prompt-major list (all images of prompt 0 first) uses ``seed + k``
(:func:`prompt_major`), the rule of ``msdm generate`` since its first version.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Protocol, runtime_checkable

import torch

SEED_RULE = "image k (0-based, prompt-major) uses seed + k"


@runtime_checkable
class Generator(Protocol):
    """Anything that makes images from prompts and per-image seeds."""

    def generate(self, prompts: list[str], seeds: list[int]) -> torch.Tensor:
        """Float ``[len(prompts), 3, H, W]`` in ``[0, 1]`` on the CPU; image ``i`` for ``prompts[i]`` from seed
        ``seeds[i]``, whatever else is in the call."""
        ...

    def info(self) -> dict:
        """What reproduces an image besides its prompt and seed (model, revision, sampler, steps, guidance, ...):
        written into every image's provenance record."""
        ...


def prompt_major(prompts: list[str], num_images_per_prompt: int, seed: int = 0) -> tuple[list[str], list[int]]:
    """``(prompts, seeds)`` of ``num_images_per_prompt`` images per prompt, prompt-major, image ``k`` with ``seed + k``."""
    n = int(num_images_per_prompt)
    return [p for p in prompts for _ in range(n)], [int(seed) + k for k in range(len(prompts) * n)]


def chunks(n: int, batch_size: int) -> Iterator[slice]:
    """Slices of ``range(n)`` in batches of ``batch_size``."""
    for start in range(0, n, max(1, int(batch_size))):
        yield slice(start, min(n, start + int(batch_size)))


def seeded_generators(seeds: list[int], device) -> list[torch.Generator]:
    """One ``torch.Generator`` per image, seeded with its seed, on ``device`` (where the pipeline draws noise)."""
    return [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]


def batched(generate_batch: Callable[[list[str], list[int]], torch.Tensor], prompts: list[str], seeds: list[int],
            batch_size: int) -> torch.Tensor:
    """Run ``generate_batch`` over ``batch_size`` chunks and concatenate (CPU float images)."""
    prompts, seeds = list(prompts), [int(s) for s in seeds]
    if len(prompts) != len(seeds):
        raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds: give one seed per image")
    out = [generate_batch(prompts[sl], seeds[sl]).cpu() for sl in chunks(len(prompts), batch_size)]
    return torch.cat(out) if out else torch.empty(0, 3, 0, 0)


@contextlib.contextmanager
def sampling_mode(model: torch.nn.Module, *contexts: contextlib.AbstractContextManager):
    """``model`` in eval mode (no dropout) inside ``contexts`` (e.g. its EMA weights swapped in); its mode is
    restored afterwards. What a training module wraps around sampling."""
    was_training = model.training
    model.eval()
    try:
        with contextlib.ExitStack() as stack:
            for c in contexts:
                stack.enter_context(c)
            yield
    finally:
        model.train(was_training)
