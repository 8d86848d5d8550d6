"""Augmentation that never contradicts the prompt.

Flips and shifted crops move findings: an "upper-left" abnormality flipped horizontally is an upper-right one, a
mirrored text overlay is no longer text, and colour jitter turns "pink, red and white" into something else. The
reference MSDM code therefore flips only samples whose prompt was dropped for classifier-free guidance (Prompt to
Polyp reference ``src/dataset.py``). That decision is made per sample inside the U-Net module here (CFG dropout is
per sample, after the batch is built), so the data layer uses the equivalent rule it *can* check: a transform is
applied to an image only if **none of the image's prompts** names what the transform would change:

=====================  ==========================================================================================
horizontal flip        no prompt names a left/right position, text, or the green/black box artefact
vertical flip          no prompt names an upper/lower position, text, or the green/black box artefact
random crop offset     no prompt names any location (otherwise the centre crop)
colour jitter          no prompt names a colour (and only if ``color_jitter > 0``; off by default)
=====================  ==========================================================================================

All of an image's prompts are checked, not only this epoch's caption, because they all describe the same pixels.
Validation and test never augment. Decisions are drawn from :mod:`msdm.data.rng`, so they are reproducible.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from PIL import Image, ImageEnhance

from msdm.data import rng
from msdm.data.facts import (
    mentions_colour,
    mentions_horizontal_side,
    mentions_location,
    mentions_text_or_artefact,
    mentions_vertical_side,
)

AUGMENTS = ("none", "prompt_aware")
_S_H, _S_V, _S_CROP, _S_JIT = rng.salt("hflip"), rng.salt("vflip"), rng.salt("crop"), rng.salt("jitter")


@dataclass(frozen=True)
class Permissions:
    """Which transforms the prompts of one image allow."""

    hflip: bool = True
    vflip: bool = True
    random_crop: bool = True
    color: bool = True


def permissions(prompts: Iterable[str]) -> Permissions:
    prompts = list(prompts)
    fixed_look = any(mentions_text_or_artefact(p) for p in prompts)
    return Permissions(
        hflip=not fixed_look and not any(mentions_horizontal_side(p) for p in prompts),
        vflip=not fixed_look and not any(mentions_vertical_side(p) for p in prompts),
        random_crop=not any(mentions_location(p) for p in prompts),
        color=not any(mentions_colour(p) for p in prompts),
    )


@dataclass(frozen=True)
class Augment:
    """Training augmentation settings; ``mode="none"`` is the centre crop with nothing else."""

    mode: str = "none"
    hflip_p: float = 0.5
    vflip_p: float = 0.5
    random_crop: bool = True
    color_jitter: float = 0.0  # brightness/contrast/saturation factors in [1 - s, 1 + s]; the reference used 0.4

    def __post_init__(self):
        if self.mode not in AUGMENTS:
            raise ValueError(f"augment must be one of {AUGMENTS}, got {self.mode!r}")

    def decide(self, perms: Permissions, seed: int, epoch: int, index: int) -> dict:
        """``{"offset", "hflip", "vflip", "jitter"}`` for one sample in one epoch."""
        if self.mode == "none":
            return {"offset": 0.5, "hflip": False, "vflip": False, "jitter": None}
        offset = rng.uniform(seed, epoch, index, _S_CROP) if (self.random_crop and perms.random_crop) else 0.5
        hflip = perms.hflip and rng.uniform(seed, epoch, index, _S_H) < self.hflip_p
        vflip = perms.vflip and rng.uniform(seed, epoch, index, _S_V) < self.vflip_p
        jitter = None
        if self.color_jitter > 0 and perms.color:
            s = self.color_jitter
            jitter = tuple(1.0 + s * (2.0 * rng.uniform(seed, epoch, index, _S_JIT, k) - 1.0) for k in range(3))
        return {"offset": offset, "hflip": hflip, "vflip": vflip, "jitter": jitter}


def apply_jitter(img: Image.Image, factors: tuple[float, float, float] | None) -> Image.Image:
    """Brightness, contrast, saturation by the given factors (PIL ImageEnhance; saturation skipped for gray)."""
    if not factors:
        return img
    b, c, s = factors
    img = ImageEnhance.Brightness(img).enhance(b)
    img = ImageEnhance.Contrast(img).enhance(c)
    if img.mode == "RGB":
        img = ImageEnhance.Color(img).enhance(s)
    return img
