"""Which images a rank makes: prompt-major items, round-robin shares, and the rank of this process.

Image ``k`` (global, prompt-major) goes to rank ``k % world_size`` and is drawn from seed ``seed + k``, so the union
of the ranks' images is exactly what one process makes.
"""

from __future__ import annotations

import os


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


def default_device(local_rank: int = 0) -> str:
    """``cuda:LOCAL_RANK`` when a GPU is there, else ``cpu``."""
    import torch

    return f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
