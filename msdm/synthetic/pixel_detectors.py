"""Pixel detectors of the synthetic scenes' overlays: box artefact, text, instruments, on any image.

They look where the renderer draws (:mod:`msdm.synthetic.geometry`), so they check a render or a generated sample
for prompt adherence (:mod:`msdm.metrics.adherence`). Each is 100 % accurate on renders at 64 px and above
(tests/test_synthetic.py); docs/synthetic-data.md has the measured scores on blurred and JPEG-compressed renders.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from msdm.synthetic.geometry import BOX_RECT, TEXT_RECT, frame_mask, rect_mask


def _as_float_hwc(img) -> np.ndarray:
    """PIL image, uint8 [H, W, 3] array, or float tensor/array [3, H, W] in [0, 1] -> float32 [H, W, 3] in [0, 1]."""
    if isinstance(img, Image.Image):
        return np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    if isinstance(img, torch.Tensor):
        img = img.detach().cpu().float().numpy()
    a = np.asarray(img)
    if a.ndim == 3 and a.shape[0] == 3 and a.shape[-1] != 3:
        a = a.transpose(1, 2, 0)
    if a.dtype == np.uint8:
        return a.astype(np.float32) / 255.0
    return np.clip(a.astype(np.float32), 0, 1)


def _region(a: np.ndarray, rect, margin: float = 0.0) -> np.ndarray:
    h, w = a.shape[:2]
    x0, y0, x1, y1 = rect
    mx, my = margin * (x1 - x0), margin * (y1 - y0)
    return a[int((y0 + my) * h) : int(np.ceil((y1 - my) * h)), int((x0 + mx) * w) : int(np.ceil((x1 - mx) * w))]


def box_artefact_score(img) -> tuple[float, float]:
    """(fraction of dark-or-green pixels, fraction of green pixels) inside the lower-left box region.

    "Green" is green or cyan (green above 1.4 x red and above 0.7 x blue): a VAE may shift the tube's green to cyan
    (the quickstart VAE does, measured in docs/metrics.md); mucosa, whose red dominates, is neither.
    """
    r = _region(_as_float_hwc(img), BOX_RECT, margin=0.08)
    mx = r.max(axis=-1)
    green = (r[..., 1] > 0.25) & (r[..., 1] > 1.4 * r[..., 0]) & (r[..., 1] > 0.7 * r[..., 2])
    dark = mx < 0.12
    return float((dark | green).mean()), float(green.mean())


def has_box_artefact(img, min_dark_or_green: float = 0.6, min_green: float = 0.01) -> bool:
    """True when the lower-left corner is a black box with green (or cyan) in it (mucosa is never green; a dark
    lumen is dark but has no green, a black frame corner covers only ~13 % of the region). Thresholds: midway
    between the scores of box and no-box scenes, renders and VAE reconstructions (box ≥ 0.84 dark-or-green, no box
    ≤ 0.34; docs/metrics.md)."""
    dark_or_green, green = box_artefact_score(img)
    return dark_or_green >= min_dark_or_green and green >= min_green


def text_overlay_score(img) -> float:
    """Fraction of bright, unsaturated pixels in the top-left OSD region.

    Saturation, not whiteness, separates text from mucosa (saturation >= ~0.4) and the black frame corner (dark):
    white strokes blurred into a black or pink background stay unsaturated, so the score survives the blur and
    JPEG artefacts of generated images (measured: see docs/synthetic-data.md).
    """
    r = _region(_as_float_hwc(img), TEXT_RECT)
    mx, mn = r.max(axis=-1), r.min(axis=-1)
    unsaturated = (mx - mn) < 0.3 * mx
    return float((unsaturated & (mx > 0.3)).mean())


def has_text_overlay(img, min_fraction: float = 0.025) -> bool:
    """True when the OSD region holds text-like pixels (renders keep highlights and instruments out of it)."""
    return text_overlay_score(img) >= min_fraction


def instrument_score(img) -> float:
    """Fraction of the frame (outside the box and text regions) in instrument colours: grey, white-blue or blue.

    Instruments have blue >= ~red; pink-orange mucosa has blue ~0.35-0.6 x red and the dark lumen is dark. White
    highlights blended into mucosa pass through blue ~ red only when nearly white, so bright pixels are left out.
    """
    a = _as_float_hwc(img)
    h, w = a.shape[:2]
    v, u = np.meshgrid((np.arange(h) + 0.5) / h, (np.arange(w) + 0.5) / w, indexing="ij")
    region = frame_mask(u, v) & ~rect_mask(u, v, BOX_RECT) & ~rect_mask(u, v, TEXT_RECT)
    r, b, mx = a[..., 0], a[..., 2], a.max(axis=-1)
    bluish = (b >= 0.85 * r) & (mx > 0.25) & (mx < 0.85)
    return float((bluish & region).sum() / max(region.sum(), 1))


def has_instrument(img, min_fraction: float = 0.003) -> bool:
    """True when at least ``min_fraction`` of the frame shows instrument colours."""
    return instrument_score(img) >= min_fraction
