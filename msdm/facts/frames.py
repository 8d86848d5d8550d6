"""The facts of a real colonoscopy frame: polyp count, size class, location cells (from its mask) and the box
artefact and text overlay (from its pixels).

The Kvasir-SEG layout: ``images/<stem>.jpg`` and ``masks/<stem>.jpg`` (white polyp on black; JPEG, so the mask is
thresholded at 128 of 255). Definitions (docs/data.md, "Facts of a real frame"):

* **polyp count**: connected components (8-connected) of the mask covering at least :data:`MIN_AREA_FRACTION`
  (0.25 % = 1/400) of the frame; smaller specks are not polyps. On the 698 shared Kvasir-SEG masks 2 of 744
  components are under it (both in one frame with ten tiny polyps); the floor is mostly for predicted masks of
  generated images (10 pixels at 64 px).
* **size class**: the prompts' mm classes cannot be read from pixels (no scale in a frame). Here the size words name
  a polyp's **share of the frame area**, with thresholds at the quartiles of the 742 polyps of the 698 shared
  frames (5.3 %, 10.4 %, 19.2 %, rounded): ``< 5mm`` = under 5 % of the frame, ``5-10mm`` = 5-10 %, ``11-20mm`` =
  10-20 %, ``>20mm`` = over 20 % (:data:`SIZE_THRESHOLDS`). So "small" and "large" are relative to Kvasir-SEG, not
  millimetres.
* **location**: the 3 x 3 cells (:data:`~msdm.facts.vocabulary.LOCATIONS`) that the polyps cover for at least
  :data:`MIN_CELL_FRACTION` (10 %) of the cell, plus the cell of each polyp's centroid, listed in the prompts' order
  ("located in the center and upper-left").
* **box artefact** / **text**: :mod:`msdm.facts.overlays` (pixel detectors calibrated on hand-labelled frames).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image
from scipy import ndimage

from msdm.facts.vocabulary import CAPTION_LOCATION_ORDER, HFLIP_LOCATION, LOCATIONS, POLYP_SIZES, VFLIP_LOCATION

__all__ = ["MIN_AREA_FRACTION", "MIN_CELL_FRACTION", "SIZE_THRESHOLDS", "FrameFacts", "read_mask", "components",
           "size_class", "mask_locations", "mask_facts", "frame_facts"]

#: A connected mask component smaller than this share of the frame is not counted as a polyp.
MIN_AREA_FRACTION = 0.0025
#: A location cell is named when the polyps cover at least this share of it (or hold a polyp's centroid).
MIN_CELL_FRACTION = 0.10
#: Upper bounds of the size classes :data:`~msdm.facts.vocabulary.POLYP_SIZES` as shares of the frame area.
SIZE_THRESHOLDS: tuple[float, float, float] = (0.05, 0.10, 0.20)


@dataclass(frozen=True)
class FrameFacts:
    """What one frame shows. ``box`` / ``text`` are ``None`` when not detected (then no caption states them)."""

    polyp_count: int
    polyp_sizes: tuple[str, ...]  # distinct size classes of its polyps, POLYP_SIZES order
    area_fraction: float  # share of the frame the counted polyps cover
    polyp_locations: tuple[str, ...]  # cells, CAPTION_LOCATION_ORDER
    box: bool | None = None
    text: bool | None = None

    def to_facts(self) -> dict:
        """The facts in the vocabulary of :func:`msdm.facts.grammar.parse_prompt` (unknown ones left out)."""
        out = {"polyp": self.polyp_count > 0, "polyp_count": self.polyp_count}
        if self.polyp_sizes:
            out["polyp_sizes"] = self.polyp_sizes
        if self.polyp_locations:
            out["polyp_locations"] = self.polyp_locations
        if self.box is not None:
            out["box"] = self.box
        if self.text is not None:
            out["text"] = self.text
        return out

    def flipped(self, hflip: bool = False, vflip: bool = False) -> FrameFacts:
        """The facts of the frame mirrored left-right (``hflip``) and/or top-bottom (``vflip``): the locations
        mirror. The box (lower left) and text (upper left) would move to places no prompt describes, so a frame that
        shows either must not be flipped (ValueError)."""
        if not (hflip or vflip):
            return self
        if self.box or self.text:
            raise ValueError("a frame with the box artefact or text must not be flipped (they have a fixed place)")
        cells = set(self.polyp_locations)
        if hflip:
            cells = {HFLIP_LOCATION[c] for c in cells}
        if vflip:
            cells = {VFLIP_LOCATION[c] for c in cells}
        return replace(self, polyp_locations=tuple(c for c in CAPTION_LOCATION_ORDER if c in cells))


def read_mask(path: str | os.PathLike, size: int | None = None) -> np.ndarray:
    """bool ``[H, W]``: the polyp mask of a (JPEG or PNG) mask file, thresholded at 128; resized first (bilinear)
    to ``size`` x ``size`` if given."""
    img = Image.open(path).convert("L")
    if size is not None and img.size != (size, size):
        img = img.resize((size, size), Image.BILINEAR)
    return np.asarray(img) >= 128


def components(mask: np.ndarray, min_area_fraction: float = MIN_AREA_FRACTION) -> list[dict]:
    """The polyps of a bool mask: ``[{"area": share of the frame, "centroid": (x, y) as fractions}, ...]``, largest
    first; components under ``min_area_fraction`` are dropped."""
    mask = np.asarray(mask, dtype=bool)
    labels, n = ndimage.label(mask, structure=np.ones((3, 3), dtype=int))
    if n == 0:
        return []
    h, w = mask.shape
    areas = np.bincount(labels.ravel(), minlength=n + 1)[1:] / mask.size
    centres = ndimage.center_of_mass(mask, labels, range(1, n + 1))
    out = [{"area": float(a), "centroid": (float(cx) / w, float(cy) / h), "label": i + 1}
           for i, (a, (cy, cx)) in enumerate(zip(areas, centres)) if a >= min_area_fraction]
    return sorted(out, key=lambda c: -c["area"])


def size_class(area_fraction: float) -> str:
    """The size word of a polyp covering ``area_fraction`` of the frame (see the module docstring)."""
    for word, upper in zip(POLYP_SIZES, SIZE_THRESHOLDS):
        if area_fraction < upper:
            return word
    return POLYP_SIZES[-1]


def _cell(x: float, y: float) -> str:
    return LOCATIONS[min(int(y * 3), 2) * 3 + min(int(x * 3), 2)]


def mask_locations(mask: np.ndarray, comps: list[dict] | None = None,
                   min_cell_fraction: float = MIN_CELL_FRACTION) -> tuple[str, ...]:
    """Location cells of the polyps of ``mask`` (counted components only), in the prompts' order."""
    mask = np.asarray(mask, dtype=bool)
    comps = components(mask) if comps is None else comps
    if not comps:
        return ()
    labels, _ = ndimage.label(mask, structure=np.ones((3, 3), dtype=int))
    kept = np.isin(labels, [c["label"] for c in comps])
    h, w = kept.shape
    rows, cols = np.linspace(0, h, 4).round().astype(int), np.linspace(0, w, 4).round().astype(int)
    cells = {LOCATIONS[3 * i + j] for i in range(3) for j in range(3)
             if kept[rows[i]:rows[i + 1], cols[j]:cols[j + 1]].mean() >= min_cell_fraction}
    cells |= {_cell(*c["centroid"]) for c in comps}
    return tuple(c for c in CAPTION_LOCATION_ORDER if c in cells)


def mask_facts(mask: np.ndarray) -> FrameFacts:
    """Polyp count, size classes, covered area and locations of a bool mask (``box``/``text`` left ``None``)."""
    comps = components(mask)
    sizes = {size_class(c["area"]) for c in comps}
    return FrameFacts(
        polyp_count=len(comps),
        polyp_sizes=tuple(s for s in POLYP_SIZES if s in sizes),
        area_fraction=round(float(sum(c["area"] for c in comps)), 6),  # as the CSV table stores it
        polyp_locations=mask_locations(mask, comps),
    )


def frame_facts(image: Image.Image | np.ndarray, mask: np.ndarray, detect_overlays: bool = True) -> FrameFacts:
    """All facts of a real frame: :func:`mask_facts` plus the box and text detectors on ``image``."""
    facts = mask_facts(mask)
    if not detect_overlays:
        return facts
    from msdm.facts.overlays import has_box

    return replace(facts, box=has_box(image))
