"""The on-disk cache a diffusion training step reads instead of running the frozen VAE and text encoder.

Two stores, each an :class:`~msdm.lora.embedding_cache.EmbeddingCache` (safetensors shards, one writer per rank,
atomic writes, lazy memory-mapped reads) under its own fingerprint folder:

* ``latents/<fp>/`` — the VAE **posterior** of each sample: ``mean`` and ``std`` ``[C, h, w]``, keyed by
  ``(sample id, "<split>/v<variant>")``. Storing the Gaussian, not one draw, keeps training stochastic exactly as
  ``vae.encode(x).latent_dist.sample()`` is: a step draws ``mean + std·ε`` with fresh ε. ``fp`` hashes the VAE
  source, the frozen dtype, the resolution and the data transform (:mod:`msdm.cache.fingerprints`).
* ``text/<fp>/`` — the text encoder's token states and attention mask, keyed by **caption** (one entry per distinct
  caption, shared by every image that has it; MEDVQA-GI: 483 prompts for 20 k rows). ``fp`` hashes the encoder
  files, ``max_length`` and the dtype. The empty caption (CFG dropout) is always stored.

Keys are sample ids and caption strings, never dataloader steps (diffusers#14430), so any loader order, batch size
or number of ranks reads the right entries.

**Random augmentation** (flips, crops) and **paraphrase sampling**. Pixels that change from epoch to epoch cannot
be one entry per sample. ``variants = K`` stores the pixels the DataModule produced at epochs ``0 … K−1`` (the fill
pass calls the sampler's ``set_epoch(k)``), and epoch ``e`` reads variant ``e mod K``. With epoch-seeded
augmentation (msdm's samplers) that is exact for ``K ≥ max_epochs`` and cycles after; ``K = 1`` is right for data
without random augmentation. Captions are looked up by text, whatever the live batch
carries; a DataModule that draws a caption (or paraphrase) per epoch shows the fill pass only some of them. Three
ways to cover the rest, all offered: ``text_epochs = T`` caption-only passes (epochs ``0 … T−1``; they read data
but encode no pixels; exact for epoch-seeded captions and ``T ≥ max_epochs``); a dataset method ``all_captions()``
returning every caption it can emit (encoded up front); or ``on_miss="encode"``, which encodes a new caption when it
first appears (the text encoder is then loaded for the run).

Completion markers (``filled-<split>-n<N>-v<K>-t<T>-<scheme>-<r>of<W>.json``) record that rank ``r`` of ``W``
filled its share of a split, so a later run skips the fill pass without reading any data. A marker is written last,
after the shards it vouches for, and lists them: a marker whose shards are not all there (deleted, or lost to a
writer that overwrote them before shard names were unique) does not count, and the split is filled again. A fill
holds a lock per rank (:meth:`TrainingCache.fill_lock`): a second filler of the same rank and folder is refused.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
from pathlib import Path

import torch

from msdm.errors import InputError
from msdm.io import write_json
from msdm.lora.embedding_cache import EmbeddingCache

_MARK_RE = re.compile(
    r"^filled-(?P<split>[a-z]+)-n(?P<n>-?\d+)-v(?P<k>\d+)-t(?P<t>\d+)-(?P<scheme>[a-z]+)-(?P<r>\d+)of(?P<w>\d+)\.json$"
)


class _MemoStore(EmbeddingCache):
    """An :class:`EmbeddingCache` that keeps entries it has read in RAM, up to ``memory_bytes``.

    Reading a tensor from a memory-mapped shard costs tens of microseconds; a training step reads two per sample per
    store, every step, so the entries a run uses repeatedly are kept (latents of 2 000 images at 32×32×8: 128 MB).
    """

    def __init__(self, *args, memory_bytes: int = 2 * 2**30, **kwargs):
        self._memo: dict[str, dict[str, torch.Tensor]] = {}
        self._memo_bytes = 0
        self.memory_bytes = int(memory_bytes)
        super().__init__(*args, **kwargs)

    def get(self, sample_id: str, text: str = ""):
        k = self.key(sample_id, text)
        hit = self._memo.get(k)
        if hit is not None:
            return hit
        entry = super().get(sample_id, text)
        if entry is not None and k not in self._pending:
            size = sum(t.numel() * t.element_size() for t in entry.values())
            if self._memo_bytes + size <= self.memory_bytes:
                self._memo[k] = entry
                self._memo_bytes += size
        return entry


class TrainingCache:
    """VAE posteriors per (sample id, split, variant) and text states per caption, on disk, per-rank shards.

    Args:
        directory: cache root; ``None`` keeps everything in memory (tests, one-off runs).
        latent_fingerprint / text_fingerprint: hex digests (see :mod:`msdm.cache.fingerprints`).
        rank: this process's rank (it only writes ``shard-r<rank>-*``).
        variants: augmentation variants per training sample (see the module docstring).
        text_epochs: epochs whose captions the fill pass stores (see the module docstring).
        store_dtype: storage dtype of floating tensors (``None`` = as computed).
        memory_bytes: RAM budget per store for entries already read.
        describe_latents / describe_text: human-readable parts written to each folder's ``fingerprint.json``.
    """

    def __init__(self, directory: str | os.PathLike | None, latent_fingerprint: str, text_fingerprint: str,
                 rank: int = 0, variants: int = 1, text_epochs: int = 1, store_dtype: torch.dtype | None = None,
                 memory_bytes: int = 2 * 2**30, describe_latents: dict | None = None,
                 describe_text: dict | None = None):
        if variants < 1:
            raise ValueError(f"variants must be >= 1, got {variants}")
        self.directory = None if directory is None else Path(directory)
        self.rank = int(rank)
        self.variants = int(variants)
        self.text_epochs = max(1, int(text_epochs))
        root = lambda sub: None if self.directory is None else self.directory / sub  # noqa: E731
        self.latents = _MemoStore(root("latents"), latent_fingerprint, rank=rank, store_dtype=store_dtype,
                                  memory_bytes=memory_bytes, describe=describe_latents)
        self.text = _MemoStore(root("text"), text_fingerprint, rank=rank, store_dtype=store_dtype,
                               memory_bytes=memory_bytes, describe=describe_text)

    # ---------------------------------------------------------------- keys
    def variant_key(self, split: str, epoch: int = 0) -> str:
        """The variant tag of ``split`` at ``epoch``: training cycles through ``variants``; other splits use 0."""
        k = epoch % self.variants if split == "train" else 0
        return f"{split}/v{k}"

    # ---------------------------------------------------------------- lookups
    def latent_posterior(self, ids, split: str, epoch: int, compute=None, device=None):
        """``(mean, std)`` ``[B, C, h, w]`` float32 for ``ids``; ``compute(rows) -> {"mean", "std"}`` fills misses
        (``None``: a miss raises :class:`KeyError` naming the ids)."""
        tag = self.variant_key(split, epoch)
        out = self.latents.get_or_compute(list(ids), [tag] * len(ids),
                                          compute or _raise_missing("latents", ids, self.latents),
                                          device=device, dtype=torch.float32)
        return out["mean"], out["std"]

    def text_states(self, captions, compute=None, device=None):
        """``(states [B, L, D] float32, mask [B, L])`` for ``captions``; ``compute`` as above."""
        captions = list(captions)
        out = self.text.get_or_compute([""] * len(captions), captions,
                                       compute or _raise_missing("text", captions, self.text),
                                       device=device, dtype=torch.float32)
        return out["states"], out["mask"]

    def missing_latents(self, ids, split: str, epoch: int) -> list[int]:
        tag = self.variant_key(split, epoch)
        return [j for j, i in enumerate(ids) if (str(i), tag) not in self.latents]

    def missing_text(self, captions) -> list[int]:
        return [j for j, c in enumerate(captions) if ("", c) not in self.text]

    # ---------------------------------------------------------------- disk
    def flush(self) -> None:
        self.latents.flush()
        self.text.flush()

    def refresh(self) -> None:
        """Index shards written by other ranks (after a barrier) or another process (``msdm cache``)."""
        self.latents.refresh()
        self.text.refresh()

    @contextlib.contextmanager
    def fill_lock(self):
        """Hold ``.fill-r<rank>.lock`` in the latents folder while filling: a second process filling the same folder
        as the same rank (two ``msdm cache`` runs, a fit next to one) is refused in one line. The OS drops the lock
        when the holder dies, however it dies."""
        if self.latents.directory is None:
            yield
            return
        import fcntl

        path = self.latents.directory / f".fill-r{self.rank:03d}.lock"
        with open(path, "a+") as f:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                f.seek(0)
                holder = f.read().strip() or "another process"
                raise InputError(f"the cache {self.directory} is being filled by {holder} (rank {self.rank}): wait "
                                 "for it to finish, then run again (it reuses what is there)") from None
            f.seek(0)
            f.truncate()
            f.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
            f.flush()
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def mark_filled(self, split: str, num_samples: int, scheme: str, rank: int, world_size: int,
                    text_epochs: int = 1, latent_shards=(), text_shards=(), **info) -> None:
        """Record that this rank filled its share of ``split`` (``num_samples`` samples, ``variants`` pixel passes,
        captions of ``text_epochs`` epochs), with the shards that hold its entries. Call it after :meth:`flush`."""
        if self.latents.directory is None:
            return
        name = f"filled-{split}-n{num_samples}-v{self.variants}-t{text_epochs}-{scheme}-{rank}of{world_size}.json"
        write_json(self.latents.directory / name, {"split": split, "num_samples": num_samples,
                                                   "variants": self.variants, "text_epochs": text_epochs,
                                                   "scheme": scheme, "rank": rank, "world_size": world_size,
                                                   "text_fingerprint": self.text.fingerprint,
                                                   "latent_shards": sorted(set(latent_shards)),
                                                   "text_shards": sorted(set(text_shards)), **info})

    def _marker_intact(self, record: dict) -> bool:
        """Every shard a marker lists is still there (markers of older caches list none: nothing to check)."""
        return all((self.latents.directory / n).is_file() for n in record.get("latent_shards", [])) and all(
            (self.text.directory / n).is_file() for n in record.get("text_shards", []))

    def is_filled(self, split: str, num_samples: int, text_epochs: int = 1) -> bool:
        """True when every rank of some earlier fill of ``split`` left its marker (same size, at least as many
        variants and caption epochs) and the text store it filled is this one."""
        if self.latents.directory is None:
            return False
        groups: dict[tuple, set[int]] = {}
        for p in self.latents.directory.iterdir():
            m = _MARK_RE.match(p.name)
            if (not m or m["split"] != split or int(m["n"]) != num_samples or int(m["k"]) < self.variants
                    or int(m["t"]) < text_epochs):
                continue
            try:
                record = json.loads(p.read_text())
            except (OSError, ValueError):
                continue
            if record.get("text_fingerprint") != self.text.fingerprint or not self._marker_intact(record):
                continue
            groups.setdefault((m["scheme"], int(m["w"])), set()).add(int(m["r"]))
        return any(ranks >= set(range(w)) for (_, w), ranks in groups.items())

    def close(self) -> None:
        self.latents.close()
        self.text.close()


def _raise_missing(what: str, keys, store: EmbeddingCache | None = None):
    def compute(rows):
        shown = [str(keys[j]) for j in rows[:5]]
        where = f" {store.directory}" if store is not None and store.directory is not None else ""
        raise KeyError(
            f"{len(rows)} {what} entries are not in the cache{where} (first: {shown}) and cache_on_miss='error'. "
            "Fill it with this fit's own config and overrides (`msdm cache -c CONFIG -- <the same --model/--data "
            "overrides>`: it prints the folder it fills, which must be this one, and refills a split whose entries "
            "are missing), fit once with cache_precompute=true, or set cache_on_miss='encode'."
        )
    return compute
