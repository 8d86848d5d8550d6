"""The frozen parts of MSDM stage 2 — the stage-1 VAE, the text encoder and its tokenizer — loaded eagerly or lazily.

``FrozenParts`` is an ``nn.Module`` mixin: a module that trains on top of the frozen parts (``MSDMUNetModule``;
a notebook's own training loop) inherits it and says where the parts come from (:meth:`FrozenParts.frozen_sources`).
The parts are registered as submodules while loaded, so they move with ``.to()`` and are frozen
(``requires_grad_(False)``, eval mode, optional half dtype) before any DDP wrapping. With ``lazy=True`` (training
from a latent + text cache, :mod:`msdm.cache`) nothing is loaded until ``vae``, ``text_encoder`` or ``tokenizer`` is
first read — a cache miss, a sample grid, ``generate``, ``export`` — and :meth:`release_frozen` drops them again.
Their sizes are read from files (:func:`text_hidden_size_from_config`, :func:`vae_scaling_factor`), so building the
trainable model loads no frozen weights.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import torch

from msdm.dtypes import DTYPES, parse_dtype  # noqa: F401 - the one dtype table, re-exported

FROZEN_NAMES = ("vae", "text_encoder")
FROZEN_PREFIXES = tuple(f"{n}." for n in FROZEN_NAMES)


def load_frozen_parts(vae: str | None, text_encoder: str, max_length: int, preset=None, dtype: torch.dtype | None = None,
                      local_files_only: bool | None = None, trust_remote_code: bool = False, device=None):
    """``(vae, tokenizer, text_encoder)``, frozen and in eval mode, in ``dtype`` (``None`` = as stored).

    ``vae``: a ``MSDMVAEModule`` checkpoint, a VAE folder or a pipeline folder; ``None`` builds an untrained VAE
    from ``preset`` (debugging only; a warning says so).
    """
    from msdm.models.loading import load_vae
    from msdm.models.presets import build_vae
    from msdm.models.text_encoder import load_text_encoder

    tokenizer, encoder = load_text_encoder(text_encoder, max_length=max_length, local_files_only=local_files_only,
                                           trust_remote_code=trust_remote_code)
    if vae is None:
        warnings.warn("MSDMUNetModule(vae=None): using an UNTRAINED VAE — fine for debugging, not for results.",
                      stacklevel=3)
        vae_model = build_vae(preset)
    else:
        vae_model = load_vae(vae)
    for m in (vae_model, encoder):
        m.requires_grad_(False).eval()
        if dtype is not None:
            m.to(dtype)
        if device is not None:
            m.to(device)
    return vae_model, tokenizer, encoder


def text_hidden_size_from_config(name: str, local_files_only: bool | None, trust_remote_code: bool) -> int:
    """The text encoder's hidden size from its config file alone (no weights loaded)."""
    from transformers import AutoConfig

    from msdm.hub import resolve
    from msdm.models.text_encoder import resolve_text_encoder_path

    path, lfo = resolve(resolve_text_encoder_path(name), local_files_only)
    cfg = AutoConfig.from_pretrained(path, local_files_only=lfo, trust_remote_code=trust_remote_code)
    cfg = getattr(cfg, "text_config", cfg)  # a full CLIP config holds the text tower's
    return int(getattr(cfg, "hidden_size", None) or cfg.d_model)


def vae_scaling_factor(source: str) -> float:
    """``scaling_factor`` of a VAE source without building it: a folder's config, or a checkpoint's hparams."""
    p = Path(os.path.expanduser(str(source)))
    if p.is_dir():
        for cfg in (p / "vae" / "config.json", p / "config.json"):
            if cfg.exists():
                return float(json.loads(cfg.read_text()).get("scaling_factor", 1.0) or 1.0)
        return 1.0
    ckpt = torch.load(p, map_location="cpu", weights_only=True, mmap=True)  # memory-mapped: weights stay on disk
    overrides = (ckpt.get("hyper_parameters", {}) or {}).get("vae_overrides") or {}
    return float(overrides.get("scaling_factor", 1.0) or 1.0)


class FrozenParts:
    """``nn.Module`` mixin: ``vae``, ``text_encoder``, ``tokenizer`` as frozen parts, loaded now or on first use.

    The class using it implements :meth:`frozen_sources` and calls :meth:`init_frozen` in ``__init__`` (after
    ``nn.Module.__init__``). Properties on the class win over ``nn.Module``'s attribute lookup, while
    ``nn.Module.__setattr__`` still stores the loaded parts in ``self._modules`` (they move with ``.to()`` and show in
    ``state_dict`` while loaded: drop ``FROZEN_PREFIXES`` keys when saving what trains).
    """

    def frozen_sources(self) -> dict:  # pragma: no cover - implemented by the user class
        """``load_frozen_parts`` keyword arguments (``vae``, ``text_encoder``, ``max_length``, ``preset``, ``dtype``, ...)."""
        raise NotImplementedError

    def init_frozen(self, lazy: bool) -> None:
        self._lazy_frozen = bool(lazy)
        self._tokenizer = None
        if not lazy:
            self._load_frozen(move=False)

    def on_frozen_loaded(self, vae) -> None:
        """Hook: called after each (re)load, e.g. to check the VAE against the trainable model."""

    def _load_frozen(self, move: bool = True) -> None:
        device = getattr(self, "device", None) if move else None
        vae, tokenizer, encoder = load_frozen_parts(**self.frozen_sources(), device=device)
        self._tokenizer = tokenizer
        self.text_encoder = encoder
        self.vae = vae
        self.on_frozen_loaded(vae)

    def _frozen(self, name: str):
        m = self._modules.get(name)
        if m is None:
            self._load_frozen()
            m = self._modules[name]
        return m

    @property
    def vae(self):
        return self._frozen("vae")

    @property
    def text_encoder(self):
        return self._frozen("text_encoder")

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._load_frozen()
        return self._tokenizer

    def frozen_loaded(self) -> bool:
        """Whether the VAE and text encoder are in memory (False while training from a full cache)."""
        return any(self._modules.get(n) is not None for n in FROZEN_NAMES)

    def release_frozen(self) -> None:
        """Drop the VAE and text encoder (lazy mode only; they reload on demand)."""
        if not self._lazy_frozen:
            return
        for name in FROZEN_NAMES:
            self._modules.pop(name, None)
        self._tokenizer = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def keep_frozen_in_eval(self) -> None:
        """Frozen parts stay in eval mode (no dropout) whatever ``train()`` asked; unloaded ones stay unloaded."""
        for name in FROZEN_NAMES:
            m = self._modules.get(name)
            if m is not None:
                m.eval()
