"""An on-disk cache of real-image features, keyed by a fingerprint of the data **and** of the extractor.

Real images are the same every validation epoch and every ``msdm evaluate`` run, and extracting them is the slow
part; their features are computed once and stored as ``<root>/<extractor name>-<key>.npz`` (ids, float32 features,
and both full fingerprints, re-checked on load). The key changes — and the cache is recomputed — when any image
changes (content hash, not modification time), an image is added or removed, or the extractor's weights or
preprocessing change (:attr:`msdm.metrics.realism.features.FeatureExtractor.fingerprint`). Files are written atomically
(:func:`msdm.io.atomic_file`), so an interrupted run never leaves a cache entry that loads.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

from msdm.io import atomic_file

__all__ = ["default_cache_dir", "hash_files", "folder_fingerprint", "dataset_fingerprint", "FeatureCache"]


def default_cache_dir() -> Path:
    """``$MSDM_CACHE_DIR/features``, else ``$XDG_CACHE_HOME/msdm/features``, else ``~/.cache/msdm/features``."""
    if os.environ.get("MSDM_CACHE_DIR"):
        return Path(os.environ["MSDM_CACHE_DIR"]) / "features"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "msdm" / "features"


def hash_files(paths: Iterable[str | os.PathLike], root: str | os.PathLike | None = None) -> str:
    """sha256 over (name relative to ``root``, sha256 of the bytes) of every file, in sorted order."""
    h = hashlib.sha256()
    for p in sorted(Path(p) for p in paths):
        name = str(p.relative_to(root)) if root is not None else p.name
        h.update(name.encode() + b"\0" + hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


def folder_fingerprint(folder: str | os.PathLike) -> str:
    """Fingerprint of the images directly in ``folder`` (names and contents)."""
    from msdm.metrics.realism.features import list_images

    return "folder:" + hash_files(list_images(folder), root=folder)


def dataset_fingerprint(*parts) -> str:
    """Fingerprint of anything describable by strings/numbers/arrays (e.g. sample ids + pixel bytes)."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, np.ndarray):
            h.update(np.ascontiguousarray(part).tobytes())
        elif hasattr(part, "detach"):
            h.update(part.detach().cpu().contiguous().numpy().tobytes())
        else:
            h.update(json.dumps(part, sort_keys=True, default=str).encode())
        h.update(b"\0")
    return "data:" + h.hexdigest()


class FeatureCache:
    """``get_or_compute(dataset_fp, extractor, compute)`` → ``(ids, features [N, d] float32)``.

    ``compute()`` must return ``(ids, features)``; it runs only on a miss. :attr:`last_hit` tells whether the last
    call was served from disk.
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.last_hit: bool | None = None

    def path_for(self, dataset_fp: str, extractor) -> Path:
        key = hashlib.sha256(f"{dataset_fp}\0{extractor.fingerprint}".encode()).hexdigest()[:24]
        return self.root / f"{extractor.name}-{key}.npz"

    def load(self, dataset_fp: str, extractor) -> tuple[list[str], np.ndarray] | None:
        path = self.path_for(dataset_fp, extractor)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                if meta.get("dataset") != dataset_fp or meta.get("extractor") != extractor.fingerprint:
                    return None
                return [str(i) for i in z["ids"]], np.array(z["features"])
        except (OSError, ValueError, KeyError):  # unreadable entry: recompute and overwrite it
            return None

    def save(self, dataset_fp: str, extractor, ids: Sequence[str], features, meta: dict | None = None) -> Path:
        feats = np.asarray(features.detach().cpu() if hasattr(features, "detach") else features, dtype=np.float32)
        if len(ids) != len(feats):
            raise ValueError(f"{len(ids)} ids but {len(feats)} feature vectors")
        info = {"dataset": dataset_fp, "extractor": extractor.fingerprint, "extractor_info": extractor.describe(),
                **(meta or {})}
        path = self.path_for(dataset_fp, extractor)
        with atomic_file(path, "wb") as f:
            np.savez(f, ids=np.array([str(i) for i in ids]), features=feats, meta=np.array(json.dumps(info)))
        return path

    def get_or_compute(self, dataset_fp: str, extractor, compute: Callable[[], tuple[Sequence[str], object]]):
        hit = self.load(dataset_fp, extractor)
        self.last_hit = hit is not None
        if hit is not None:
            return hit
        ids, feats = compute()
        ids = [str(i) for i in ids]
        feats = np.asarray(feats.detach().cpu() if hasattr(feats, "detach") else feats, dtype=np.float32)
        self.save(dataset_fp, extractor, ids, feats)
        return ids, feats
