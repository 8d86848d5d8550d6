"""Batched, per-image-seeded generation shared by ``msdm generate``, ``MSDMUNetModule.generate`` and callbacks.

Image ``k`` (global index, prompt-major) is drawn from its own ``torch.Generator`` seeded ``seed + k``: an image
does not depend on the batch size, on which rank made it, or on how many images were made before it. That is
what lets an evaluation run shard 5 000 images over ranks and still be reproducible image by image.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import torch


def expand_prompts(prompts: list[str], num_images_per_prompt: int) -> list[tuple[int, int, str]]:
    """``[(prompt_idx, image_idx, prompt), ...]`` prompt-major, 0-based indices."""
    return [(p, i, s) for p, s in enumerate(prompts) for i in range(num_images_per_prompt)]


def shard(items: list, rank: int = 0, world_size: int = 1) -> list:
    """Round-robin shard: item ``k`` goes to rank ``k % world_size`` (balanced to within one item)."""
    return items[rank::world_size]


def env_rank_world() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from torchrun (``RANK``/``WORLD_SIZE``/``LOCAL_RANK``) or SLURM
    (``SLURM_PROCID``/``SLURM_NTASKS``/``SLURM_LOCALID``); ``(0, 1, 0)`` for a plain process."""
    env = os.environ
    if "WORLD_SIZE" in env and "RANK" in env:
        return int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0))
    if "SLURM_NTASKS" in env and "SLURM_PROCID" in env:
        return int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env.get("SLURM_LOCALID", 0))
    return 0, 1, 0


@torch.no_grad()
def generate_images(
    pipe,
    prompts: list[str],
    num_images_per_prompt: int = 1,
    seed: int | None = 0,
    batch_size: int = 16,
    rank: int = 0,
    world_size: int = 1,
    **call_kwargs,
) -> Iterator[tuple[list[int], list[int], list[str], torch.Tensor]]:
    """Yield ``(prompt_idx, image_idx, prompts, images)`` chunks; ``images`` float [b, C, H, W] in [0, 1] on CPU.

    Only this rank's share (:func:`shard`) is generated. ``call_kwargs`` go to the pipeline (``guidance_scale``,
    ``num_inference_steps``, ``eta``, ...).
    """
    items = expand_prompts(prompts, num_images_per_prompt)
    keys = shard(list(range(len(items))), rank, world_size)
    device = pipe._execution_device
    for start in range(0, len(keys), batch_size):
        ks = keys[start : start + batch_size]
        chunk = [items[k] for k in ks]
        gens = None if seed is None else [torch.Generator(device=device).manual_seed(seed + k) for k in ks]
        images = pipe([c[2] for c in chunk], generator=gens, output_type="pt", **call_kwargs).images
        yield [c[0] for c in chunk], [c[1] for c in chunk], [c[2] for c in chunk], images.cpu()


@torch.no_grad()
def generate_seeded(pipe, prompts: list[str], seeds: list[int], batch_size: int = 16, **call_kwargs) -> torch.Tensor:
    """Images for ``prompts[i]`` drawn from a generator seeded ``seeds[i]``: float [N, C, H, W] in [0, 1] on CPU.

    The per-image counterpart of :func:`generate_images` when the caller already knows each image's seed (a
    sharded prediction loader: image ``k`` with ``seed + k``, whichever rank and batch it lands in).
    """
    device = pipe._execution_device
    out = []
    for start in range(0, len(prompts), batch_size):
        gens = [torch.Generator(device=device).manual_seed(int(s)) for s in seeds[start : start + batch_size]]
        out.append(pipe(list(prompts[start : start + batch_size]), generator=gens, output_type="pt",
                        **call_kwargs).images.cpu())
    return torch.cat(out) if out else torch.empty(0)


# ---------------------------------------------------------------------------------------------------------------
# Output folders written by several ranks (msdm generate, msdm predict)
# ---------------------------------------------------------------------------------------------------------------


def shard_record_path(out: str | os.PathLike, rank: int, world: int) -> Path:
    """The hidden per-rank record of the files a rank wrote (merged into ``provenance.json`` at the end)."""
    return Path(out) / f".provenance-r{rank}of{world}.json"


def finish_sharded_output(out: str | os.PathLike, prompts: list[str], world: int, generation: dict) -> bool:
    """Merge every rank's record into ``provenance.json`` and write ``prompts.json``; ``False`` while a share is
    still missing (the last share to finish completes the folder)."""
    import json

    from msdm.io import write_json
    from msdm.provenance import update_manifest

    out = Path(out)
    shards = [shard_record_path(out, r, world) for r in range(world)]
    entries = {}
    try:
        for p in shards:
            entries.update(json.loads(p.read_text()))
    except FileNotFoundError:
        return False  # another share is still running (or another rank is merging right now)
    write_json(out / "prompts.json", {str(k + 1): s for k, s in enumerate(prompts)})
    entries["prompts.json"] = None  # hashed from the file
    update_manifest(out, entries, generation=generation)
    for p in shards:  # merged: a later run with the same shares must not mistake them for its own
        p.unlink(missing_ok=True)
    return True
