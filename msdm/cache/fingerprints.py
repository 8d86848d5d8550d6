"""Fingerprints of what produced a cached tensor: model *sources* (files on disk), live modules and data transforms.

A cache entry is valid only for the exact VAE weights, text encoder, resolution and image transform that made it.
Each of those is reduced to a JSON-able dict here; :func:`msdm.lora.embedding_cache.fingerprint` hashes the dicts
and the cache lives in a folder named by that hash, so changing any part can never serve a stale entry.

Sources are fingerprinted from their files, **without building the model**: that is what lets a training run that
reads the cache leave the VAE and the text encoder unloaded. Files up to :data:`FULL_HASH_BYTES` are hashed whole;
larger ones by size plus evenly spaced 1 MiB samples (the head, the tail and 14 in between), which any retraining or
fine-tuning changes — every weight tensor moves — at a fraction of the cost of hashing gigabytes.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

FULL_HASH_BYTES = 64 * 2**20
_SAMPLE = 2**20
_SAMPLES = 16
# DataModule arguments that change how batches are *loaded*, not what a sample's pixels or captions are.
LOADER_ONLY_HPARAMS = frozenset({
    "batch_size", "val_batch_size", "num_workers", "persistent_workers", "pin_memory", "prefetch_factor",
    "drop_last", "val_prompts", "validation_prompts", "on_bad_sample", "verify",
})


def file_digest(path: str | os.PathLike) -> str:
    """sha256 of a file (whole up to :data:`FULL_HASH_BYTES`, else size + 16 evenly spaced 1 MiB samples)."""
    path = Path(path)
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        if size <= FULL_HASH_BYTES:
            for block in iter(lambda: f.read(8 * _SAMPLE), b""):
                h.update(block)
        else:
            for i in range(_SAMPLES):
                f.seek((size - _SAMPLE) * i // (_SAMPLES - 1))
                h.update(f.read(_SAMPLE))
    return h.hexdigest()[:32]


def path_fingerprint(path: str | os.PathLike) -> dict:
    """Digest of a file, or of every file in a folder (relative names + contents; hidden files skipped)."""
    p = Path(os.path.expanduser(str(path))).resolve()
    if p.is_file():
        return {"file": p.name, "digest": file_digest(p)}
    if not p.is_dir():
        raise FileNotFoundError(f"cannot fingerprint {p}: no such file or folder")
    files = sorted(q for q in p.rglob("*") if q.is_file() and not any(s.startswith(".") for s in q.relative_to(p).parts))
    h = hashlib.sha256()
    for q in files:
        h.update(f"{q.relative_to(p).as_posix()}\0{file_digest(q)}\0".encode())
    return {"folder": p.name, "files": len(files), "digest": h.hexdigest()[:32]}


def module_weights_digest(module) -> str:
    """sha256 over every parameter and buffer of a live module (for models that exist only in memory)."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode() + str(t.dtype).encode())
        h.update(t.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:32]


def text_encoder_fingerprint(name_or_path: str, local_files_only: bool | None = None) -> dict:
    """What identifies a text encoder source: the name given and the files of its resolved local folder."""
    from msdm.hub import resolve
    from msdm.models.text_encoder import resolve_text_encoder_path

    path, _ = resolve(resolve_text_encoder_path(name_or_path), local_files_only)
    return {"name": name_or_path, **path_fingerprint(path)}


def vae_fingerprint(source: str | None, live_module=None) -> dict:
    """A VAE source file/folder by its files; a VAE that exists only in memory (``vae=None``) by its weights."""
    if source is None:
        if live_module is None:
            raise ValueError("a VAE without a source needs the live module to fingerprint its weights")
        return {"name": None, "weights": module_weights_digest(live_module)}
    return {"name": str(source), **path_fingerprint(source)}


def _jsonable(v):
    try:
        json.dumps(v)
        return v
    except TypeError:
        return repr(v)


def transform_fingerprint(datamodule=None, dataset=None) -> dict:
    """What decides a sample's pixels (and captions): the DataModule class and its non-loader arguments.

    A DataModule can state it explicitly with a ``cache_fingerprint()`` method (returning anything JSON-able); else
    its ``hparams`` minus :data:`LOADER_ONLY_HPARAMS` are used. Training from a bare DataLoader gives only the
    dataset's class and length: set ``cache_tag`` on the module when you change such a dataset's transform.
    """
    for obj in (datamodule, dataset):
        fn = getattr(obj, "cache_fingerprint", None)
        if callable(fn):
            return {"class": type(obj).__qualname__, "custom": _jsonable(fn())}
    if datamodule is not None:
        hp = dict(getattr(datamodule, "hparams", {}) or {})
        hp = {k: _jsonable(v) for k, v in sorted(hp.items()) if k not in LOADER_ONLY_HPARAMS}
        return {"class": f"{type(datamodule).__module__}.{type(datamodule).__qualname__}", "hparams": hp}
    if dataset is not None:
        n = len(dataset) if hasattr(dataset, "__len__") else None
        return {"class": f"{type(dataset).__module__}.{type(dataset).__qualname__}", "len": n}
    return {"class": None}
