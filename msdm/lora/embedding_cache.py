"""A per-sample cache of tensors (text embeddings, latents, ...), keyed by **sample id** and text.

Why keyed this way: a cache filled in dataloader order and read back by step index silently pairs the wrong
conditioning with an image as soon as the loader shuffles (diffusers#14430). Here the key is
``(sample id, text)`` — the text because a caption can change between epochs (paraphrase sampling) — and the cache
lives under a *fingerprint* of whatever produced the values (encoder id and config, max_length, dtype, ...), so
changing the encoder can never serve stale entries.

Storage: in memory (``directory=None``) or on disk as safetensors shards under ``directory/<fingerprint>/``.
Each writer appends its own shards (``shard-r{rank}-w{writer}-{n}.safetensors``: ``writer`` is random per cache
object), written atomically (temporary file, then rename), so neither DDP ranks nor two processes of the same rank
(two ``msdm cache`` runs on one folder) ever write the same file, and a killed run leaves only whole shards. Reads are lazy
(memory-mapped ``safe_open``): a FLUX T5 cache of many GB is never held in RAM.

Generic by design: values are any ``dict[str, Tensor]`` per sample; :meth:`EmbeddingCache.get_or_compute` takes a
callback that computes the missing rows of a batch, so the same class caches VAE latents (pass an empty or
size-describing ``text``) or anything else per sample.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from msdm.io import atomic_file, write_json

# shard-r000-w1a2b3c4d-000000.safetensors (and shard-r000-000000.safetensors of caches written before the writer id)
_SHARD_RE = re.compile(r"^shard-r(\d+)-(?:w([0-9a-f]+)-)?(\d+)\.safetensors$")


def fingerprint(**parts) -> str:
    """A stable hex digest of ``parts`` (JSON-serialised with sorted keys; non-JSON values via ``str``)."""
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def module_fingerprint(module: torch.nn.Module, name: str = "") -> dict:
    """What identifies a frozen encoder: its name/path, config, dtype and a checksum of a few weights.

    The weight checksum (first and last parameter tensors) catches two models with the same config and different
    weights — e.g. two random tiny models, or a fine-tuned encoder saved under the same name — without hashing GBs.
    """
    cfg = getattr(module, "config", None)
    if cfg is not None and hasattr(cfg, "to_json_string"):
        cfg = json.loads(cfg.to_json_string())
    elif cfg is not None:
        cfg = dict(cfg)
    cfg = {k: v for k, v in (cfg or {}).items() if not str(k).startswith("_") and k not in ("transformers_version",)}
    params = list(module.parameters())
    digest = hashlib.sha256()
    for p in (params[:1] + params[-1:]) if params else []:
        if p.device.type != "meta":
            digest.update(p.detach().flatten()[:65536].float().cpu().numpy().tobytes())
    return {"name": name or getattr(module, "name_or_path", "") or type(module).__name__, "class": type(module).__name__,
            "config": cfg, "dtype": str(params[0].dtype) if params else None, "weights": digest.hexdigest()[:16]}


class EmbeddingCache:
    """Cache of per-sample tensor dicts keyed by ``(sample_id, text)`` under a fingerprint.

    Args:
        directory: root folder on disk, or ``None`` for an in-memory cache.
        fingerprint: identifies what produced the values (see :func:`fingerprint`); entries of another fingerprint
            are never returned (they live in another subfolder).
        rank: this process's rank; it only ever writes ``shard-r{rank}-*`` files.
        flush_every: write a shard after this many new entries (and on :meth:`flush`) ...
        flush_bytes: ... or once the pending entries hold this many bytes (FLUX T5 states are ~4 MB a sample).
        store_dtype: optional dtype to store floating tensors in (e.g. ``torch.bfloat16`` to halve the disk size).
    """

    def __init__(self, directory: str | os.PathLike | None, fingerprint: str, rank: int = 0,
                 flush_every: int = 256, flush_bytes: int = 512 * 2**20, store_dtype: torch.dtype | None = None,
                 describe: dict | None = None):
        self.fingerprint = str(fingerprint)
        self.rank = int(rank)
        self.flush_every = int(flush_every)
        self.flush_bytes = int(flush_bytes)
        self._pending_bytes = 0
        self.store_dtype = store_dtype
        self.hits = 0
        self.misses = 0
        self._pending: dict[str, dict[str, torch.Tensor]] = {}
        self._pending_meta: dict[str, tuple[str, str]] = {}
        self._index: dict[str, tuple[Path, list[str]]] = {}  # key -> (shard, tensor names)
        self._handles: dict[Path, object] = {}
        self._next_shard = 0
        self.writer = secrets.token_hex(4)  # this object's shard names are its own, whoever else writes here
        self.written: list[str] = []  # names of the shards this object wrote
        self.directory = None if directory is None else Path(directory) / self.fingerprint
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
            info = self.directory / "fingerprint.json"
            if not info.exists() and self.rank == 0:
                write_json(info, {"fingerprint": self.fingerprint, **(describe or {})})
            self.refresh()

    # ---------------------------------------------------------------- keys
    @staticmethod
    def key(sample_id: str, text: str = "") -> str:
        """The storage key of ``(sample_id, text)``: a digest, so ids and captions of any length and alphabet fit."""
        return hashlib.sha256(f"{sample_id}\x00{text}".encode()).hexdigest()[:40]

    def __len__(self) -> int:
        return len(self._index) + sum(k not in self._index for k in self._pending)

    def __contains__(self, item) -> bool:
        sid, text = item if isinstance(item, tuple) else (item, "")
        k = self.key(sid, text)
        return k in self._pending or k in self._index

    # ---------------------------------------------------------------- disk
    def refresh(self) -> None:
        """Index the shards on disk (all ranks'), e.g. after other ranks flushed."""
        if self.directory is None:
            return
        from safetensors import safe_open

        for path in sorted(self.directory.iterdir()):
            m = _SHARD_RE.match(path.name)
            if not m:  # temporary files of interrupted writes start with '.' and never match
                continue
            if path in self._handles:
                continue
            f = safe_open(str(path), framework="pt", device="cpu")
            meta = f.metadata() or {}
            if meta.get("fingerprint") != self.fingerprint:
                continue
            names: dict[str, list[str]] = {}
            for name in f.keys():
                k, _, field = name.partition("/")
                names.setdefault(k, []).append(field)
            self._handles[path] = f
            for k, fields in names.items():
                self._index[k] = (path, fields)

    def flush(self) -> Path | None:
        """Write pending entries as one new shard of this rank; returns its path (None if nothing was pending)."""
        if not self._pending or self.directory is None:
            return None
        from safetensors.torch import save

        tensors = {f"{k}/{field}": t for k, entry in self._pending.items() for field, t in entry.items()}
        meta = {"fingerprint": self.fingerprint,
                "entries": json.dumps([[k, *self._pending_meta[k]] for k in self._pending])}
        path = self.directory / f"shard-r{self.rank:03d}-w{self.writer}-{self._next_shard:06d}.safetensors"
        self._next_shard += 1
        with atomic_file(path, "wb") as fh:
            fh.write(save(tensors, metadata=meta))
        self.written.append(path.name)
        self._pending.clear()
        self._pending_meta.clear()
        self._pending_bytes = 0
        self.refresh()
        return path

    def shard_of(self, sample_id: str, text: str = "") -> str | None:
        """The name of the shard holding ``(sample_id, text)`` on disk (None: not on disk, or only pending)."""
        hit = self._index.get(self.key(sample_id, text))
        return None if hit is None else hit[0].name

    # ---------------------------------------------------------------- get / put
    def get(self, sample_id: str, text: str = "") -> dict[str, torch.Tensor] | None:
        """The stored tensors of one sample (on CPU), or ``None``."""
        k = self.key(sample_id, text)
        if k in self._pending:
            return self._pending[k]
        hit = self._index.get(k)
        if hit is None:
            return None
        path, fields = hit
        f = self._handles[path]
        return {field: f.get_tensor(f"{k}/{field}") for field in fields}

    def put(self, sample_id: str, text: str, tensors: dict[str, torch.Tensor]) -> None:
        """Store one sample's tensors (each without the batch dimension)."""
        k = self.key(sample_id, text)
        entry = {}
        for name, t in tensors.items():
            if "/" in name:
                raise ValueError(f"tensor names may not contain '/': {name!r}")
            t = t.detach().to("cpu")
            if self.store_dtype is not None and t.is_floating_point():
                t = t.to(self.store_dtype)
            entry[name] = t.contiguous().clone()  # own storage: never keep a whole batch alive through a view
        self._pending[k] = entry
        self._pending_meta[k] = (str(sample_id), str(text))
        self._pending_bytes += sum(t.numel() * t.element_size() for t in entry.values())
        if self.directory is not None and (len(self._pending) >= self.flush_every
                                           or self._pending_bytes >= self.flush_bytes):
            self.flush()

    def get_or_compute(
        self,
        ids: Sequence[str],
        texts: Sequence[str] | None,
        compute: Callable[[list[int]], dict[str, torch.Tensor]],
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> dict[str, torch.Tensor]:
        """The batch ``{name: [B, ...]}`` for ``ids`` / ``texts``, computing only the missing rows.

        ``compute(rows)`` receives the batch positions that missed (one per distinct key) and must return
        ``{name: [len(rows), ...]}``; its results are stored and returned in batch order. ``misses`` counts the rows
        computed, ``hits`` all others (served from the cache, or from a twin computed in the same batch).
        ``dtype`` casts floating outputs.
        """
        texts = [""] * len(ids) if texts is None else list(texts)
        if len(texts) != len(ids):
            raise ValueError(f"{len(ids)} ids but {len(texts)} texts")
        rows: list[dict[str, torch.Tensor] | None] = [self.get(i, t) for i, t in zip(ids, texts)]
        # One computation per distinct missing key, even if the batch holds it twice.
        first: dict[str, int] = {}
        for j, r in enumerate(rows):
            if r is None:
                first.setdefault(self.key(ids[j], texts[j]), j)
        missing = list(first.values())
        self.hits += len(ids) - len(missing)
        self.misses += len(missing)
        if missing:
            out = compute(missing)
            for pos, j in enumerate(missing):
                self.put(ids[j], texts[j], {name: v[pos] for name, v in out.items()})
            rows = [r if r is not None else self.get(i, t) for r, i, t in zip(rows, ids, texts)]
        names = list(rows[0].keys())
        batch = {}
        for name in names:
            t = torch.stack([r[name] for r in rows])
            if dtype is not None and t.is_floating_point():
                t = t.to(dtype)
            batch[name] = t.to(device) if device is not None else t
        return batch

    def close(self) -> None:
        self.flush()
        self._handles.clear()
        self._index.clear()
