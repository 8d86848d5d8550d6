"""Square training images: crop, pad or squash to ``size × size``, then scale to [-1, 1].

Aspect choices (``aspect=``), documented in docs/data.md:

* ``"crop"`` — the largest centred square, then resize. The reference MSDM datasets do exactly this
  (``T.CenterCrop(min(image.size))`` → ``T.Resize``; ``RandomCrop`` at training, see Prompt to Polyp reference
  ``src/dataset.py``). Default for Kvasir / MEDVQA-GI: colonoscopy frames are nearly square (617×528 … 1348×1070)
  and their black corners carry no content, so a centre crop loses only a thin band.
* ``"pad"`` — letterbox: resize the long side to ``size`` and pad the short side with black, centred (the
  reference's ``padding=True`` path for the large models). Default for ROCOv2: radiology figures range from
  portrait to wide panoramas, and a crop would cut anatomy that the caption may describe; black is the background
  of X-ray, CT and MRI figures.
* ``"squash"`` — resize both sides to ``size`` ignoring aspect (what the 256×256 Kvasir-SEG copies already are).

Resizing uses PIL's antialiased filters (bilinear by default, as torchvision's ``T.Resize`` on PIL images in the
reference).
"""

from __future__ import annotations

import torch
from PIL import Image
from torchvision.transforms.functional import pil_to_tensor

ASPECTS = ("crop", "pad", "squash")
_INTERP = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "lanczos": Image.LANCZOS}


def crop_box(width: int, height: int, offset: float = 0.5) -> tuple[int, int, int, int]:
    """The largest square inside ``width × height``; ``offset`` in [0, 1] slides it along the long axis (0.5 = centre)."""
    s = min(width, height)
    offset = min(max(float(offset), 0.0), 1.0)
    left = round((width - s) * offset)
    top = round((height - s) * offset)
    return left, top, left + s, top + s


def to_square(
    img: Image.Image,
    size: int,
    aspect: str = "crop",
    offset: float = 0.5,
    interpolation: str = "bilinear",
    fill: int = 0,
) -> Image.Image:
    """Return ``img`` as a ``size × size`` PIL image by ``aspect`` ("crop" | "pad" | "squash")."""
    if aspect not in ASPECTS:
        raise ValueError(f"aspect must be one of {ASPECTS}, got {aspect!r}")
    resample = _INTERP[interpolation]
    w, h = img.size
    if aspect == "crop":
        box = crop_box(w, h, offset)
        if (w, h) == (size, size):
            return img
        return img.resize((size, size), resample, box=box)
    if aspect == "squash" or w == h:
        return img if (w, h) == (size, size) else img.resize((size, size), resample)
    # pad: resize the long side to `size`, then centre on a black canvas (cheaper than padding first, same result
    # up to the interpolation of the border pixels).
    scale = size / max(w, h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    small = img.resize((nw, nh), resample)
    canvas = Image.new(img.mode, (size, size), fill if img.mode == "L" else (fill,) * len(img.getbands()))
    canvas.paste(small, ((size - nw) // 2, (size - nh) // 2))
    return canvas


def to_tensor(img: Image.Image) -> torch.Tensor:
    """8-bit PIL image → float tensor ``[C, H, W]`` in [-1, 1] (``x / 127.5 - 1``, the reference's Normalize(0.5, 0.5))."""
    return pil_to_tensor(img).float().div_(127.5).sub_(1.0)


class SquareTransform:
    """``PIL image → [C, size, size]`` tensor in [-1, 1]: the deterministic (validation) transform.

    Training calls it with a crop ``offset`` and flips chosen by :mod:`msdm.data.augment`. It is also what the
    throughput benchmark hands to torchvision's ``ImageFolder``, so both pipelines do identical pixel work.
    """

    def __init__(self, size: int = 256, aspect: str = "crop", interpolation: str = "bilinear"):
        if aspect not in ASPECTS:
            raise ValueError(f"aspect must be one of {ASPECTS}, got {aspect!r}")
        if interpolation not in _INTERP:
            raise ValueError(f"interpolation must be one of {tuple(_INTERP)}, got {interpolation!r}")
        self.size, self.aspect, self.interpolation = int(size), aspect, interpolation

    def __call__(self, img: Image.Image, offset: float = 0.5, hflip: bool = False, vflip: bool = False) -> torch.Tensor:
        img = to_square(img, self.size, self.aspect, offset, self.interpolation)
        if hflip:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        if vflip:
            img = img.transpose(Image.FLIP_TOP_BOTTOM)
        return to_tensor(img)

    def __repr__(self) -> str:
        return f"SquareTransform(size={self.size}, aspect={self.aspect!r}, interpolation={self.interpolation!r})"
