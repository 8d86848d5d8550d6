"""The challenge-folder writer: generated images in the MEDVQA-GI layout, with provenance, from any number of ranks.

A folder holds ``prompt{p:04d}_img{i:04d}.png`` (1-based), ``prompts.json`` (``{"1": prompt, ...}``) and
``provenance.json`` (the SHA-256 of every file and the settings shared by the folder). Every PNG carries its own
provenance record in text chunks (synthetic, prompt, seed, model + revision, sampler, steps, guidance, msdm version;
:mod:`msdm.provenance`); check a folder with ``msdm provenance OUT``.

Sharded writing (``msdm generate`` under torchrun or a SLURM array, ``msdm utility``, ``msdm predict``): each rank
writes its images and records them in a hidden ``.provenance-rRofW.json``; ``prompts.json`` and ``provenance.json``
are written once every share is there — by rank 0 after a barrier when the ranks share a process group, otherwise
by whichever rank finishes last (it finds every share's record). This module is the one writer all of them use.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from msdm.generators.base import SEED_RULE, chunks
from msdm.generators.sharding import expand_prompts, shard


def images_to_uint8(images: torch.Tensor) -> np.ndarray:
    """float [N, C, H, W] in [0, 1] → uint8 [N, H, W, C] (round half up, as PIL does)."""
    return (images.clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy() * 255 + 0.5).astype(np.uint8)


def shard_record_path(out: str | os.PathLike, rank: int, world: int) -> Path:
    """The hidden per-rank record of the files a rank wrote (merged into ``provenance.json`` at the end)."""
    return Path(out) / f".provenance-r{rank}of{world}.json"


def finish_sharded_output(out: str | os.PathLike, prompts: list[str], world: int, generation: dict) -> bool:
    """Merge every rank's record into ``provenance.json`` and write ``prompts.json``; ``False`` while a share is
    still missing (the last share to finish completes the folder)."""
    from msdm.io import write_json
    from msdm.prompts import numbered_prompts
    from msdm.provenance import update_manifest

    out = Path(out)
    shards = [shard_record_path(out, r, world) for r in range(world)]
    entries = {}
    try:
        for p in shards:
            entries.update(json.loads(p.read_text()))
    except FileNotFoundError:
        return False  # another share is still running (or another rank is merging right now)
    write_json(out / "prompts.json", numbered_prompts(prompts))
    entries["prompts.json"] = None  # hashed from the file
    update_manifest(out, entries, generation=generation)
    for p in shards:  # merged: a later run with the same shares must not mistake them for its own
        p.unlink(missing_ok=True)
    return True


class ChallengeFolderWriter:
    """One rank's share of a challenge-layout folder.

    ``write(prompt_idx, image_idx, prompt, seed, image)`` saves one image (0-based indices; ``image`` a uint8
    ``[H, W, 3]`` array or PIL image) with its provenance record (``info`` + prompt, seed, indices);
    :meth:`write_images` saves float images in [0, 1]. :meth:`close` records this rank's files; :meth:`finish` writes
    the folder's files once every share has closed.
    """

    def __init__(self, out: str | os.PathLike, info: dict, rank: int = 0, world: int = 1):
        self.out, self.info, self.rank, self.world = Path(out), dict(info), int(rank), int(world)
        self.out.mkdir(parents=True, exist_ok=True)
        self.entries: dict[str, dict] = {}

    def write(self, prompt_idx: int, image_idx: int, prompt: str, seed: int | None, image) -> str:
        from msdm.prompts import challenge_filename
        from msdm.provenance import make_record, save_png

        name = challenge_filename(int(prompt_idx) + 1, int(image_idx) + 1)
        record = make_record(prompt, None if seed is None else int(seed), self.info, prompt_index=int(prompt_idx) + 1,
                             image_index=int(image_idx) + 1)
        self.entries[name] = save_png(image, self.out / name, record)
        return name

    def write_images(self, prompt_idx, image_idx, prompts, seeds, images: torch.Tensor) -> None:
        for p, i, text, s, arr in zip(prompt_idx, image_idx, prompts, seeds, images_to_uint8(images)):
            self.write(int(p), int(i), text, s, arr)

    def close(self) -> Path:
        """Record this rank's files (``.provenance-rRofW.json``)."""
        from msdm.io import write_json

        path = shard_record_path(self.out, self.rank, self.world)
        write_json(path, self.entries)
        return path

    def finish(self, prompts: list[str], generation: dict) -> bool:
        """Write ``prompts.json`` and ``provenance.json`` if every share has closed (see the module docstring)."""
        return finish_sharded_output(self.out, prompts, self.world, generation)


def folder_generation(info: dict, seed: int | None, num_images: int | None, prompts: list[str]) -> dict:
    """The settings shared by a folder's images (``provenance.json``'s ``generation``)."""
    return {**info, "seed": seed, "num_images_per_prompt": num_images, "num_prompts": len(prompts), "synthetic": True}


def write_challenge_folder(generator, prompts: list[str], out: str | os.PathLike, num_images: int, seed: int = 0,
                           rank: int = 0, world: int = 1, batch_size: int = 16, info: dict | None = None,
                           progress=None, barrier=None) -> int:
    """Generate this rank's share of ``prompts`` × ``num_images`` with ``generator`` (:class:`~msdm.generators.base.
    Generator`; image ``k`` from seed ``seed + k``) and write it; returns the number of images written.

    ``info``: the provenance of the images (default ``generator.info()`` plus the seed rule). ``progress``: called
    with the number of images after each batch. ``barrier``: a function that waits for every rank (a process group):
    rank 0 then completes the folder; without one, whichever rank finishes last does.
    """
    info = dict(info) if info is not None else {**generator.info(), "seed_rule": SEED_RULE}
    writer = ChallengeFolderWriter(out, info, rank, world)
    items = expand_prompts(prompts, num_images)
    keys = shard(list(range(len(items))), rank, world)
    for sl in chunks(len(keys), batch_size):
        ks = keys[sl]
        texts = [items[k][2] for k in ks]
        images = generator.generate(texts, [seed + k for k in ks])
        writer.write_images([items[k][0] for k in ks], [items[k][1] for k in ks], texts, [seed + k for k in ks],
                            images)
        if progress is not None:
            progress(len(ks))
    writer.close()
    generation = folder_generation(info, seed, num_images, prompts)
    if barrier is not None:
        barrier()  # every rank's images and records are on disk
        if rank == 0:
            writer.finish(prompts, generation)
    else:
        writer.finish(prompts, generation)  # completes only when every share has written its record
    return len(keys)


def folder_complete(folder: str | os.PathLike, prompts: list[str], num_images: int) -> bool:
    """True when ``folder`` holds every image of ``prompts`` × ``num_images``, ``prompts.json`` and a manifest."""
    from msdm.prompts import challenge_filename, numbered_prompts

    folder = Path(folder)
    pj, man = folder / "prompts.json", folder / "provenance.json"
    if not (pj.is_file() and man.is_file()):
        return False
    if json.loads(pj.read_text(encoding="utf-8")) != numbered_prompts(prompts):
        return False
    return all((folder / challenge_filename(p + 1, i + 1)).is_file()
               for p in range(len(prompts)) for i in range(num_images))
