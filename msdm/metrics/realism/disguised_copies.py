"""A generator that copies: it returns training frames disguised by flips, small crops, colour jitter and JPEG
re-encoding — what a memorizing diffusion model emits at worst, and what a memorization check must flag.

Used by the tests of :mod:`msdm.metrics.realism.memorization`, its benchmark, and as a ``generate()``-protocol stand-in
(docs/CONVENTIONS.md) for the memorization callback's tests.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np

__all__ = ["disguise", "CopyingGenerator"]


def disguise(image, rng: np.random.Generator, max_crop: float = 0.1, jitter: float = 0.15, jpeg_quality=(60, 90),
             flips: bool = True):
    """One disguised copy of ``image`` (PIL): a random flip (h, v, both or none), a crop keeping ≥ 1 − ``max_crop``
    of each side resized back, brightness / contrast / saturation jitter of ± ``jitter``, hue shift of
    ± ``jitter``/5 of the circle, and a JPEG round trip at a quality in ``jpeg_quality``."""
    from PIL import Image, ImageEnhance

    im = image.convert("RGB")
    w, h = im.size
    if flips:
        k = int(rng.integers(0, 4))
        if k & 1:
            im = im.transpose(Image.FLIP_LEFT_RIGHT)
        if k & 2:
            im = im.transpose(Image.FLIP_TOP_BOTTOM)
    keep = 1 - rng.uniform(0, max_crop)
    cw, ch = round(w * keep), round(h * keep)
    x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    im = im.crop((x0, y0, x0 + cw, y0 + ch)).resize((w, h), Image.BILINEAR)
    for enhance in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        im = enhance(im).enhance(1 + rng.uniform(-jitter, jitter))
    hsv = np.asarray(im.convert("HSV")).copy()
    hsv[..., 0] = (hsv[..., 0].astype(np.int16) + int(round(rng.uniform(-jitter, jitter) / 5 * 255))) % 256
    im = Image.fromarray(hsv, "HSV").convert("RGB")
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=int(rng.integers(jpeg_quality[0], jpeg_quality[1] + 1)))
    buf.seek(0)
    return Image.open(buf).convert("RGB")


class CopyingGenerator:
    """``generate(prompts, num_images_per_prompt, seed)`` → disguised copies of ``frames`` (PIL images or paths),
    float ``[N, 3, size, size]`` in [0, 1]; image ``k`` copies frame ``(seed + k) mod len(frames)``, so a run's
    images are reproducible and, like MSDMUNetModule's, independent of how prompts are split into calls."""

    def __init__(self, frames: Sequence, size: int | None = None, **disguise_kwargs):
        from msdm.metrics.realism.features import load_image

        self.frames = [load_image(f) if not hasattr(f, "convert") else f for f in frames]
        self.size = size
        self.disguise_kwargs = disguise_kwargs

    def generate(self, prompts: Sequence[str], num_images_per_prompt: int = 1, seed: int | None = None, **_):
        import torch

        seed = 0 if seed is None else int(seed)
        out = []
        for k in range(len(prompts) * num_images_per_prompt):
            rng = np.random.default_rng([seed + k, 7])
            im = disguise(self.frames[(seed + k) % len(self.frames)], rng, **self.disguise_kwargs)
            if self.size:
                im = im.resize((self.size, self.size))
            out.append(torch.from_numpy(np.asarray(im, dtype=np.float32) / 255).permute(2, 0, 1))
        return torch.stack(out) if out else torch.zeros(0, 3, self.size or 1, self.size or 1)
