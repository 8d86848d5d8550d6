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
