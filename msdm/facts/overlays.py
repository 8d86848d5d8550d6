"""Pixel detectors of the two overlays of real colonoscopy frames: the box artefact and the text.

* **Box artefact** (MEDVQA-GI: "a green/black box artefact"): the endoscope's scope-position inset (ScopeGuide) at
  the lower left of HyperKvasir / Kvasir-SEG frames: a rectangle of pure black, or teal-green with a drawing of the
  colon, over the lower-left corner. The detector works on the frame reduced to 64 x 64 (area average), so a
  256 px real frame and a 64 or 128 px generated image are judged alike: it is the share of "box pixels" (near black:
  every channel under 25; or teal: G > R + 60 and B > R + 30) in the lower-left region ``x < 0.22, y > 0.8`` of the
  frame outside the corner triangle that the octagonal endoscope mask blackens in every frame.
  The threshold and the accuracy against hand labels of all 698 shared frames are in docs/metrics.md.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

__all__ = ["BOX_THRESHOLD", "as_uint8_rgb", "box_score", "has_box"]

#: Share of box pixels above which the lower-left region is a box artefact.
BOX_THRESHOLD = 0.9
_WORK = 64  # side the detectors work at


def as_uint8_rgb(image, size: int = _WORK) -> np.ndarray:
    """float32 ``[size, size, 3]`` in 0..255 from a PIL image, a uint8 ``[H, W, 3]`` array or a float tensor /
    array ``[3, H, W]`` in [0, 1], reduced by area averaging (PIL's BOX filter)."""
    if isinstance(image, Image.Image):
        img = image.convert("RGB")
    else:
        a = np.asarray(image.detach().cpu() if hasattr(image, "detach") else image)
        if a.ndim == 3 and a.shape[0] == 3 and a.shape[-1] != 3:  # [3, H, W] float in [0, 1]
            a = np.clip(a.transpose(1, 2, 0) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        elif a.dtype != np.uint8:
            a = np.clip(a * 255.0 + 0.5, 0, 255).astype(np.uint8)
        img = Image.fromarray(a)
    if img.size != (size, size):
        img = img.resize((size, size), Image.BOX)
    return np.asarray(img, dtype=np.float32)


def _box_region(n: int) -> np.ndarray:
    y, x = (np.mgrid[0:n, 0:n] + 0.5) / n
    return (x < 0.22) & (y > 0.80) & ((x + (1 - y)) > 0.16)


def box_score(image) -> float:
    """Share of box-coloured pixels (near black or teal) in the lower-left box region (0..1)."""
    a = as_uint8_rgb(image)
    r, g, b = a[..., 0], a[..., 1], a[..., 2]
    boxlike = (a.max(-1) < 25) | ((g > r + 60) & (b > r + 30))
    return float(boxlike[_box_region(a.shape[0])].mean())


def has_box(image) -> bool:
    return box_score(image) > BOX_THRESHOLD
