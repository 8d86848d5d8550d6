"""Helpers of the pass that fills a :class:`~msdm.cache.training.TrainingCache` from ordinary DataLoaders.

The fill pass reads batches in the standard batch convention (``pixel_values``, ``caption``, ``id``; see
docs/CONVENTIONS.md) from any DataLoader, so no DataModule needs to know about the cache.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Iterator

from msdm.generators.sharding import env_rank_world  # noqa: F401 - re-exported: the cache command shards by the same ranks


def _epoch_sampler(loader):
    """The object of ``loader`` whose ``set_epoch`` decides the epoch's order and per-epoch draws, or None."""
    for obj in (getattr(loader, "sampler", None), getattr(getattr(loader, "batch_sampler", None), "sampler", None),
                getattr(loader, "batch_sampler", None)):
        if obj is not None and callable(getattr(obj, "set_epoch", None)):
            return obj
    return None


def iterate_variants(loader, variants: int, restore_epoch: int | None = None,
                     max_batches: int | None = None) -> Iterator[tuple[int, int, dict]]:
    """Yield ``(variant, batch_index, batch)`` for ``variants`` passes over ``loader``.

    Pass ``k`` calls ``set_epoch(k)`` on the loader's sampler first, so it sees what epoch ``k`` of training sees
    (order, per-epoch captions and epoch-seeded augmentation). A loader without such a sampler gives, for ``k > 0``,
    whatever its next pass draws (a warning says so). The sampler's epoch is set back to ``restore_epoch`` after.
    """
    sampler = _epoch_sampler(loader)
    if sampler is None and variants > 1:
        warnings.warn("cache variants > 1 but the loader's sampler has no set_epoch(): variant k is simply the k-th "
                      "pass's random draw, not the pixels of training epoch k", stacklevel=2)
    try:
        for k in range(variants):
            if sampler is not None:
                sampler.set_epoch(k)
            for i, batch in enumerate(loader):
                if max_batches is not None and i >= max_batches:
                    break
                yield k, i, batch
    finally:
        if sampler is not None and restore_epoch is not None:
            sampler.set_epoch(restore_epoch)


def id_shard(sample_id: str, world_size: int) -> int:
    """The rank that encodes ``sample_id`` when every rank reads the whole loader (stable across runs/machines)."""
    return int.from_bytes(hashlib.sha256(str(sample_id).encode()).digest()[:8], "little") % max(1, world_size)


def sized_len(obj) -> int | None:
    try:
        return len(obj)
    except TypeError:
        return None
