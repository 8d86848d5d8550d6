"""The seeded, image-level validation split (Prompt to Polyp protocol: 10 % of the *images*, each with all of its
prompts, so no image is in both splits).

Each image id gets a key ``mix(seed, crc32(id))``; the ``round(fraction × n)`` images with the smallest keys form
the validation split. Consequences a user can rely on:

* the split depends only on the set of ids and the seed, not on file order, row order or the number of prompts;
* adding or removing images moves only those images (and at most a few neighbours at the cut), so a dataset that
  grows keeps its earlier validation images;
* a different seed gives a different split.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

from msdm.data import rng


def split_ids(ids: Sequence[str], val_fraction: float = 0.1, seed: int = 0) -> tuple[list[str], list[str]]:
    """``(train_ids, val_ids)``, each in the input order; image-disjoint and stable under ``seed``."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    unique = list(dict.fromkeys(ids))
    n_val = round(val_fraction * len(unique))
    if val_fraction > 0 and n_val == 0 and len(unique) > 1:
        n_val = 1  # a tiny dataset still gets one validation image
    keyed = sorted(unique, key=lambda i: (rng.mix(seed, rng.salt(i)), i))
    val = set(keyed[:n_val])
    return [i for i in unique if i not in val], [i for i in unique if i in val]


def hold_out_images(splits: dict, val_fraction: float, seed: int) -> dict:
    """``splits`` (``{"train": (records, source)[, "val": ...][, "test": ...]}``) completed: without a ``val``
    split, ``val_fraction`` of the training *images* (with all their prompts) become it (:func:`split_ids`); without
    a ``test`` split, test = validation (the same object)."""
    splits = dict(splits)
    if "val" not in splits:
        train_recs, train_src = splits["train"]
        _, val_ids = split_ids([r.id for r in train_recs], val_fraction, seed)
        keep = set(val_ids)
        splits["val"] = ([r for r in train_recs if r.id in keep], train_src)
        splits["train"] = ([r for r in train_recs if r.id not in keep], train_src)
    splits.setdefault("test", splits["val"])
    return splits


def heldout_split(ids: Sequence[str], n_heldout: int, seed: int = 0) -> tuple[list[int], list[int]]:
    """``(train indices, held-out indices)``, each ascending: the ``n_heldout`` ids with the smallest
    ``zlib.crc32(f"{seed}:{id}")`` are held out (ties by id).

    The fixed real-frame test split of ``bench/real_kvasir.py`` and ``msdm quickstart`` (ids ``<folder>/<stem>``:
    200 of the 698 Kvasir-SEG frames). Like :func:`split_ids`, it depends only on the ids and the seed; unlike it,
    the held-out count is exact.
    """
    ids = list(ids)
    if len(set(ids)) != len(ids):
        raise ValueError("heldout_split needs distinct ids")
    if not 0 <= n_heldout <= len(ids):
        raise ValueError(f"n_heldout must be in [0, {len(ids)}], got {n_heldout}")
    order = sorted(range(len(ids)), key=lambda i: (zlib.crc32(f"{seed}:{ids[i]}".encode()), ids[i]))
    held = sorted(order[:n_heldout])
    keep = set(held)
    return [i for i in range(len(ids)) if i not in keep], held
