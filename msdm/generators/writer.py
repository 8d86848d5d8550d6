"""The challenge-folder writer: generated images in the MEDVQA-GI layout, with provenance, from any number of ranks.

A folder holds ``prompt{p:04d}_img{i:04d}.png`` (1-based), ``prompts.json`` (``{"1": prompt, ...}``) and
``provenance.json`` (the SHA-256 of every file and the settings shared by the folder). Every PNG carries its own
provenance record in text chunks (synthetic, prompt, seed, model + revision, sampler, steps, guidance, msdm version;
:mod:`msdm.provenance`); check a folder with ``msdm provenance OUT``.

Sharded writing (``msdm generate`` under torchrun or a SLURM array, ``msdm utility``, ``msdm predict``): each rank
writes its images and records them in a hidden ``.provenance-rRofW.json``; ``prompts.json`` and ``provenance.json``
are written once every share is there — by rank 0 after a barrier when the ranks share a process group, otherwise
by whichever rank finishes last (it finds every share's record). This module is the one writer all of them use.

**Nothing mixed, nothing lost.** A folder carries the fingerprint of what made it (the folder's settings — model and
revision, sampler, steps, guidance, η, dtype, seed, images per prompt — and its prompts) in ``.msdm-output.json``
(:mod:`msdm.io`), marked incomplete while it is written and complete (listing its files) when the last share
finishes. A rerun into a used folder (:func:`open_generation_folder`) resumes when the fingerprint is the same (the
images already there, with their own records, are kept), is refused when it differs (naming what differs), and with
``overwrite`` replaces only what msdm wrote (a file msdm did not write stops it). A folder a killed run left is
incomplete: ``msdm evaluate`` refuses it (:func:`require_complete`) and ``msdm provenance`` reports it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
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
    from msdm.provenance import update_manifest

    out = Path(out)
    shards = [shard_record_path(out, r, world) for r in range(world)]
    entries = {}
    try:
        for p in shards:
            entries.update(json.loads(p.read_text()))
    except FileNotFoundError:
        return False  # another share is still running (or another rank is merging right now)
    _write_prompts(out, prompts)
    entries["prompts.json"] = None  # hashed from the file
    update_manifest(out, entries, generation=generation)
    for p in shards:  # merged: a later run with the same shares must not mistake them for its own
        p.unlink(missing_ok=True)
    mark_generation_folder(out, generation, prompts, complete=True)  # last: the folder is whole
    return True


# ----------------------------------------------------------------------------------------------------------------
# The folder's fingerprint and completion marker (module docstring)
# ----------------------------------------------------------------------------------------------------------------

# What a generation writes into its folder (anything else there is the user's): images, prompts, manifests, the
# per-rank records, msdm's marker, and what `msdm evaluate` writes next to the images by default.
_OWNED = re.compile(r"^(prompt\d+_img\d+\.png|prompts\.json|provenance\.json|\.provenance-r\d+of\d+\.json|"
                    r"\.msdm-output\.json|metrics\.json|adherence\.json|\.[^/]*\.tmp-[^/]*)$")
WAIT_FOR_RANK0_S = 600.0  # how long another rank waits for rank 0 to replace a folder (--overwrite)


def generation_fingerprint(generation: dict, prompts: list[str]) -> str:
    """SHA-256 of the folder's settings (:func:`folder_generation`) and its prompts: what makes every image."""
    text = json.dumps({"generation": generation, "prompts": list(prompts)}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def mark_generation_folder(out: str | os.PathLike, generation: dict, prompts: list[str], complete: bool,
                           writer: str | None = None) -> None:
    """Write the folder's marker: its fingerprint and settings, incomplete (being written) or complete."""
    from msdm.io import read_output_marker, write_output_marker

    old = read_output_marker(out) or {}
    generation = json.loads(json.dumps(generation, default=str))
    write_output_marker(out, complete=complete, writer=writer or old.get("writer", "msdm"),
                        fingerprint=generation_fingerprint(generation, prompts), generation=generation)


def _differences(old: dict | None, new: dict, prompts_changed: bool) -> str:
    if not isinstance(old, dict):
        return "made by another msdm writer or before folders were fingerprinted"
    keys = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    said = [f"{k} {old.get(k)!r} → {new.get(k)!r}" for k in keys[:4]] + (["prompts"] if prompts_changed else [])
    return ", ".join(said) + (f" (+{len(keys) - 4} more)" if len(keys) > 4 else "") or "other settings"


def _kept_images(out: Path, generation: dict, prompts: list[str]) -> set[str]:
    """Images already in ``out`` whose own record says they are this folder's (prompt, seed, settings)."""
    from msdm.provenance import SHARED_SETTINGS, read_record

    n, seed = generation.get("num_images_per_prompt"), generation.get("seed")
    kept = set()
    for path in out.glob("prompt*_img*.png"):
        m = re.match(r"^prompt(\d+)_img(\d+)\.png$", path.name)
        rec = read_record(path) if m else None
        if rec is None:
            continue
        p, i = int(m.group(1)), int(m.group(2))
        if not (1 <= p <= len(prompts) and isinstance(n, int) and 1 <= i <= n) or rec.get("prompt") != prompts[p - 1]:
            continue
        if isinstance(seed, int) and rec.get("seed") != seed + (p - 1) * n + (i - 1):
            continue
        if all(rec.get(k) == generation[k] for k in SHARED_SETTINGS if k in generation and k in rec):
            kept.add(path.name)
    return kept


def open_generation_folder(out: str | os.PathLike, generation: dict, prompts: list[str], overwrite: bool = False,
                           rank: int = 0, writer: str = "msdm generate", option: str = "--out") -> set[str]:
    """Claim ``out`` for the images of ``generation`` × ``prompts``, or resume it; returns the names of the images
    already there (kept). Refuses a folder of other settings (unless ``overwrite``: then msdm's files are removed;
    rank 0 does it, other ranks wait for it) and a folder holding files msdm did not write. Module docstring."""
    from msdm.errors import OutputExistsError

    out = Path(out)
    generation = json.loads(json.dumps(generation, default=str))
    fingerprint = generation_fingerprint(generation, prompts)
    if out.is_file() or out.is_symlink():
        raise OutputExistsError(f"{option} {out} is a file, not a folder: give a folder path (nothing was written)")
    # ranks that start together (DDP predict, sharded generate) claim one at a time: a rank must never judge a
    # folder that another rank is half-way through claiming (its marker not yet written)
    # (a lock on the folder itself: nothing is added to a folder that is then refused)
    import fcntl

    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(out, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        kept = _claim(out, generation, prompts, fingerprint, overwrite, rank, writer, option)
    finally:
        os.close(fd)  # releases the lock
    # None: another rank waits (outside the lock) for rank 0 to replace the folder (--overwrite)
    return kept if kept is not None else _wait_for_claim(out, fingerprint, generation, prompts, option)


def _claim(out: Path, generation: dict, prompts: list[str], fingerprint: str, overwrite: bool, rank: int,
           writer: str, option: str) -> set[str] | None:
    from msdm.errors import OutputExistsError
    from msdm.io import read_output_marker

    marker = read_output_marker(out) if out.is_dir() else None
    if marker is not None and marker.get("fingerprint") == fingerprint:
        return _kept_images(out, generation, prompts)
    files = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if files:
        foreign = [f for f in files if not _OWNED.match(f)]
        if foreign:
            shown = ", ".join(foreign[:3]) + (f" (+{len(foreign) - 3} more)" if len(foreign) > 3 else "")
            raise OutputExistsError(f"{option} {out} holds files msdm did not write ({shown}): nothing was written; "
                                    "choose a new folder, or move them out")
        old = (marker or {}).get("generation")
        # the old settings with the new prompts give another fingerprint than the folder's: the prompts changed
        prompts_changed = isinstance(old, dict) and generation_fingerprint(old, prompts) != marker.get("fingerprint")
        changed = _differences(old, generation, prompts_changed)
        if not overwrite:
            raise OutputExistsError(f"{option} {out} holds images made with other settings ({changed}): nothing was "
                                    "written; choose a new folder, or add --overwrite to replace msdm's images there")
        if rank != 0:
            return None
        for name in files:
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    mark_generation_folder(out, generation, prompts, complete=False, writer=writer)
    _write_prompts(out, prompts)  # now, so that what a stopped run leaves can still be read (--allow-incomplete)
    return set()


def _write_prompts(out: Path, prompts: list[str]) -> None:
    from msdm.io import write_json
    from msdm.prompts import numbered_prompts

    write_json(out / "prompts.json", numbered_prompts(prompts))


def _wait_for_claim(out: Path, fingerprint: str, generation: dict, prompts: list[str], option: str) -> set[str]:
    """Another rank waits until rank 0 has replaced the folder (its marker carries our fingerprint)."""
    from msdm.errors import OutputExistsError
    from msdm.io import read_output_marker

    t0 = time.monotonic()
    while (read_output_marker(out) or {}).get("fingerprint") != fingerprint:
        if time.monotonic() - t0 > WAIT_FOR_RANK0_S:
            raise OutputExistsError(f"{option} {out}: rank 0 did not replace the folder within {WAIT_FOR_RANK0_S:.0f} "
                                    "s (--overwrite is carried out by rank 0)")
        time.sleep(1.0)
    return _kept_images(out, generation, prompts)


def require_complete(folder: str | os.PathLike, allow_incomplete: bool = False,
                     what: str = "msdm evaluate") -> str | None:
    """Refuse a generated folder a run did not finish (its marker says so, or its settings call for more images
    than it holds) or that mixes runs; ``allow_incomplete``: return a loud warning with the counts instead. A plain
    folder of images (no marker, no manifest) passes."""
    from msdm.errors import InputError
    from msdm.provenance import folder_status

    st = folder_status(folder)
    if st.complete is not False and not st.mixed:
        return None
    count = f"{st.present} of {st.expected} images" if st.expected is not None else f"{st.present} images"
    why = "; ".join(st.notes)
    if st.complete is False:
        problem = f"{folder} is incomplete ({count}; {why})"
    else:
        problem = f"{folder} mixes runs ({why}; e.g. {next(iter(st.mixed))}: {next(iter(st.mixed.values()))})"
    if not allow_incomplete:
        raise InputError(f"{problem}: {what} scores only whole folders; rerun the same msdm generate to complete "
                         "it, or pass --allow-incomplete to score what is there")
    return f"WARNING: {problem}; scoring the {st.present} images present (--allow-incomplete)"


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
        self.entries: dict[str, dict | None] = {}
        self.kept: set[str] = set()

    def open(self, prompts: list[str], num_images: int | None, seed: int | None, overwrite: bool = False,
             writer: str = "msdm generate") -> set[str]:
        """Claim or resume the folder for these settings (:func:`open_generation_folder`); the images already
        there are kept (listed as this rank's when it would write them: :meth:`keep`)."""
        self.kept = open_generation_folder(self.out, folder_generation(self.info, seed, num_images, prompts), prompts,
                                           overwrite, self.rank, writer)
        return self.kept

    def keep(self, prompt_idx: int, image_idx: int) -> bool:
        """True (and recorded) when the image is already in the folder from a resumed run of the same settings."""
        from msdm.prompts import challenge_filename

        name = challenge_filename(int(prompt_idx) + 1, int(image_idx) + 1)
        if name in self.kept:
            self.entries[name] = None  # hashed from the file at the end
            return True
        return False

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
                           progress=None, barrier=None, overwrite: bool = False, writer: str = "msdm generate") -> int:
    """Generate this rank's share of ``prompts`` × ``num_images`` with ``generator`` (:class:`~msdm.generators.base.
    Generator`; image ``k`` from seed ``seed + k``) and write it; returns the number of images written.

    ``info``: the provenance of the images (default ``generator.info()`` plus the seed rule). ``progress``: called
    with the number of images after each batch. ``barrier``: a function that waits for every rank (a process group):
    rank 0 then completes the folder; without one, whichever rank finishes last does. A used ``out`` is resumed,
    refused or (``overwrite``) replaced: :func:`open_generation_folder`; images kept from a resumed run are not
    counted in the return value.
    """
    info = dict(info) if info is not None else {**generator.info(), "seed_rule": SEED_RULE}
    folder = ChallengeFolderWriter(out, info, rank, world)
    folder.open(prompts, num_images, seed, overwrite, writer)
    items = expand_prompts(prompts, num_images)
    keys = shard(list(range(len(items))), rank, world)
    todo = [k for k in keys if not folder.keep(items[k][0], items[k][1])]
    if progress is not None and len(todo) < len(keys):
        progress(len(keys) - len(todo))
    for sl in chunks(len(todo), batch_size):
        ks = todo[sl]
        texts = [items[k][2] for k in ks]
        images = generator.generate(texts, [seed + k for k in ks])
        folder.write_images([items[k][0] for k in ks], [items[k][1] for k in ks], texts, [seed + k for k in ks],
                            images)
        if progress is not None:
            progress(len(ks))
    folder.close()
    generation = folder_generation(info, seed, num_images, prompts)
    if barrier is not None:
        barrier()  # every rank's images and records are on disk
        if rank == 0:
            folder.finish(prompts, generation)
    else:
        folder.finish(prompts, generation)  # completes only when every share has written its record
    return len(todo)


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
