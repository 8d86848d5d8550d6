"""Deprecated: per-image-seeded generation moved to :mod:`msdm.generators` (the house refactor, issue 22).

The names below stay importable from here. ``generate_images`` / ``generate_seeded`` are the old pipeline-level
helpers, now thin wrappers over :class:`msdm.generators.MSDMGenerator`'s seed rule (image ``k`` from seed ``seed + k``).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from msdm.generators.base import batched, chunks, seeded_generators
from msdm.generators.sharding import env_rank_world, expand_prompts, shard  # noqa: F401
from msdm.generators.writer import finish_sharded_output, shard_record_path  # noqa: F401


@torch.no_grad()
def generate_images(pipe, prompts: list[str], num_images_per_prompt: int = 1, seed: int | None = 0,
                    batch_size: int = 16, rank: int = 0, world_size: int = 1,
                    **call_kwargs) -> Iterator[tuple[list[int], list[int], list[str], torch.Tensor]]:
    """Yield ``(prompt_idx, image_idx, prompts, images)`` chunks of this rank's share (image ``k`` from seed
    ``seed + k``; unseeded when ``seed`` is None); ``call_kwargs`` go to the pipeline."""
    items = expand_prompts(prompts, num_images_per_prompt)
    keys = shard(list(range(len(items))), rank, world_size)
    device = pipe._execution_device
    for sl in chunks(len(keys), batch_size):
        chunk = [items[k] for k in keys[sl]]
        gens = None if seed is None else seeded_generators([seed + k for k in keys[sl]], device)
        images = pipe([c[2] for c in chunk], generator=gens, output_type="pt", **call_kwargs).images
        yield [c[0] for c in chunk], [c[1] for c in chunk], [c[2] for c in chunk], images.cpu()


@torch.no_grad()
def generate_seeded(pipe, prompts: list[str], seeds: list[int], batch_size: int = 16, **call_kwargs) -> torch.Tensor:
    """Images for ``prompts[i]`` drawn from a generator seeded ``seeds[i]``: float [N, C, H, W] in [0, 1] on CPU."""
    device = pipe._execution_device

    def batch(ps, ss):
        return pipe(list(ps), generator=seeded_generators(ss, device), output_type="pt", **call_kwargs).images

    return batched(batch, prompts, seeds, batch_size)
