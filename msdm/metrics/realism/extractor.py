"""The feature-extractor interface of the realism metrics and the image helpers every extractor shares.

:class:`FeatureExtractor` (an ``nn.Module``):

* ``preprocess(images)`` — PIL images, file paths, uint8 arrays/tensors or float tensors in [0, 1] (what
  ``generate()`` returns) → the model's input batch. Float images are quantised to uint8 first, exactly as saving
  them as PNG would, so features of generated tensors equal features of the saved files;
* ``forward(batch) -> [N, feature_dim]``; ``extract(images)`` = preprocess + forward in batches, no grad, float32;
* ``feature_dim``, ``name`` and ``fingerprint`` (a hash of the weights and the preprocessing, the key of feature
  caches: another model or another preprocessing never reuses cached real statistics).

Extractors live on callbacks or in commands, never on a LightningModule, so their weights never enter a model
checkpoint (GUIDE §4). A new extractor subclasses :class:`FeatureExtractor` in its own file next to
:mod:`~msdm.metrics.realism.inception`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


# ----------------------------------------------------------------------------------------------------------------
# Images in, uint8 HWC arrays out
# ----------------------------------------------------------------------------------------------------------------


def load_image(path: str | os.PathLike):
    """Open an image file as RGB, as the challenge script does (``Image.open(p).convert('RGB')``); an unreadable
    file raises :class:`msdm.errors.InputError` naming it."""
    from PIL import Image

    from msdm.errors import InputError

    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except FileNotFoundError:
        raise
    except (OSError, SyntaxError, ValueError) as e:  # PIL: UnidentifiedImageError, truncated data, bad headers
        raise InputError(f"{path}: not a readable image ({e}); regenerate or re-copy it, or move it out") from e


def _float_to_uint8(x: torch.Tensor) -> torch.Tensor:
    # The same quantisation as saving a [0, 1] image as PNG (diffusers' numpy_to_pil: (x * 255).round()).
    return (x.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)


def to_uint8_images(images) -> list[np.ndarray]:
    """Normalise any image input to a list of uint8 ``[H, W, 3]`` arrays.

    Accepts a path, a PIL image, a ``[H, W(, C)]`` NumPy array, a ``[C, H, W]``/``[N, C, H, W]`` tensor (uint8, or
    float in [0, 1]), or a list of these. One-channel images are repeated to RGB.
    """
    if isinstance(images, torch.Tensor):
        t = images.unsqueeze(0) if images.ndim == 3 else images
        if t.ndim != 4:
            raise ValueError(f"image tensors must be [C,H,W] or [N,C,H,W], got shape {tuple(images.shape)}")
        if t.dtype != torch.uint8:
            t = _float_to_uint8(t)
        if t.shape[1] == 1:
            t = t.expand(-1, 3, -1, -1)
        return list(t.permute(0, 2, 3, 1).cpu().contiguous().numpy())
    if isinstance(images, (str, os.PathLike)) or _is_pil(images) or isinstance(images, np.ndarray):
        images = [images]
    out = []
    for im in images:
        if isinstance(im, (str, os.PathLike)):
            im = load_image(im)
        if _is_pil(im):
            im = np.asarray(im.convert("RGB"))
        elif isinstance(im, torch.Tensor):
            out.extend(to_uint8_images(im))
            continue
        a = np.asarray(im)
        if a.dtype != np.uint8:
            a = np.round(np.clip(a.astype(np.float64), 0, 1) * 255).astype(np.uint8)
        if a.ndim == 2:
            a = a[:, :, None]
        if a.shape[2] == 1:
            a = np.repeat(a, 3, axis=2)
        if a.ndim != 3 or a.shape[2] != 3:
            raise ValueError(f"expected an [H, W, 3] image, got shape {a.shape}")
        out.append(a)
    return out


def _is_pil(x) -> bool:
    return type(x).__module__.startswith("PIL.")


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files directly in ``folder``, sorted by name."""
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


# ----------------------------------------------------------------------------------------------------------------
# The interface
# ----------------------------------------------------------------------------------------------------------------


def _hash_state(module: nn.Module, h) -> None:
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}|{t.dtype}|{t.numel()}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())


class FeatureExtractor(nn.Module):
    """A frozen image → feature model with its own preprocessing (see the module docstring)."""

    name: str = "features"
    feature_dim: int

    def __init__(self):
        super().__init__()
        self._fingerprint: str | None = None

    # --- to override ---
    def preprocess(self, images) -> torch.Tensor:
        """Images (any form :func:`to_uint8_images` accepts) → float model input ``[N, 3, H, W]`` on CPU."""
        raise NotImplementedError

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def preprocessing_config(self) -> dict:
        """What the preprocessing does, for the fingerprint and for provenance."""
        return {}

    # --- shared ---
    @property
    def device(self) -> torch.device:
        for t in self.parameters():
            return t.device
        for t in self.buffers():
            return t.device
        return torch.device("cpu")

    @torch.no_grad()
    def extract(self, images, batch_size: int = 32) -> torch.Tensor:
        """Features of ``images`` as a float32 CPU tensor ``[N, feature_dim]`` (eval mode, no grad)."""
        was_training = self.training
        self.eval()
        if isinstance(images, torch.Tensor) and images.ndim == 4:
            chunks = [images[i:i + batch_size] for i in range(0, len(images), batch_size)]
        else:
            items = list(images) if isinstance(images, (list, tuple)) else [images]
            chunks = [items[i:i + batch_size] for i in range(0, len(items), batch_size)]
        out = []
        for chunk in chunks:
            x = self.preprocess(chunk).to(self.device)
            out.append(self(x).float().cpu())
        self.train(was_training)
        if not out:
            return torch.zeros(0, self.feature_dim)
        return torch.cat(out)

    def extract_paths(self, paths: Sequence[str | os.PathLike], batch_size: int = 32,
                      desc: str | None = None) -> torch.Tensor:
        """Features of image files, ``batch_size`` files in memory at a time; ``desc`` shows a progress bar
        (:mod:`msdm.progress`) over the images."""
        from msdm.progress import progress_bar

        feats = []
        with progress_bar(total=len(paths), desc=desc, unit="img", leave=False, disable=desc is None) as bar:
            for i in range(0, len(paths), batch_size):
                chunk = paths[i:i + batch_size]
                feats.append(self.extract([load_image(p) for p in chunk], batch_size))
                bar.update(len(chunk))
        return torch.cat(feats) if feats else torch.zeros(0, self.feature_dim)

    @property
    def fingerprint(self) -> str:
        """sha256 of the class, the preprocessing and every weight: the cache key part for this extractor."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            h.update(json.dumps({"class": type(self).__name__, "feature_dim": self.feature_dim,
                                 "preprocessing": self.preprocessing_config()}, sort_keys=True).encode())
            _hash_state(self, h)
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def describe(self) -> dict:
        return {"name": self.name, "feature_dim": self.feature_dim, "fingerprint": self.fingerprint,
                "preprocessing": self.preprocessing_config()}

    def _freeze(self):
        self.requires_grad_(False)
        self.eval()
        return self
