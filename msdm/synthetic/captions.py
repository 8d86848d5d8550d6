"""MEDVQA-GI-style captions of a synthetic scene, derived from its true attributes (so every caption is true)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from msdm.synthetic.geometry import LAYOUT_SIZE, grid, instrument_field, polyp_field, visible_region
from msdm.synthetic.scene import (
    CAPTION_LOCATION_ORDER,
    INSTRUMENTS,
    LOCATIONS,
    PARIS_TYPES,
    POLYP_SIZES,
    POLYP_TONES,
    SceneAttributes,
)

# =====================================================================================================================
# Captions
# =====================================================================================================================


def _join(items: Sequence[str]) -> str:
    """'a', 'a and b', 'a, b and c' (the real prompts' list style)."""
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _count_phrase(n: int, singular: str, plural: str) -> str:
    return f"no {plural}" if n == 0 else f"1 {singular}" if n == 1 else f"{n} {plural}"


def _cells_covered(mask: np.ndarray, min_fraction: float = 0.02) -> list[str]:
    """Location cells whose area is covered by ``mask`` for at least ``min_fraction``, in caption order."""
    size = mask.shape[0]
    if size % 3:
        raise ValueError(f"the mask side must be divisible by 3, got {size}")
    fraction = mask.reshape(3, size // 3, 3, size // 3).mean(axis=(1, 3)).ravel()  # row-major, as LOCATIONS
    covered = {name for name, f in zip(LOCATIONS, fraction) if f >= min_fraction}
    return [name for name in CAPTION_LOCATION_ORDER if name in covered]


def scene_locations(attrs: SceneAttributes) -> dict[str, list[str]]:
    """Location cells of the visible polyps (``abnormality``) and instruments, measured at a fixed 48 px layout."""
    u, v = grid(LAYOUT_SIZE)
    keep = visible_region(LAYOUT_SIZE, attrs.box_artefact)
    tools = np.zeros(u.shape, dtype=bool)
    for ins in attrs.instruments:
        tools |= instrument_field(ins, u, v, LAYOUT_SIZE)[0] > 0.5
    polyps = np.zeros(u.shape, dtype=bool)
    for p in attrs.polyps:
        polyps |= polyp_field(p, u, v, LAYOUT_SIZE)[0] > 0.5
    return {"abnormality": _cells_covered(polyps & keep & ~tools), "instrument": _cells_covered(tools & keep)}


def captions_for(attrs: SceneAttributes, locations: dict[str, list[str]] | None = None) -> list[str]:
    """Every MEDVQA-GI-style prompt that is true of the scene (the real data has ~10 per image), fixed order.

    The wording copies the real prompts, typos included ("with an an abnormality located in", kinds concatenated
    with "and" and no spaces: "polyp snareandtube"). ``locations`` is :func:`scene_locations` (computed if None).
    """
    n_p, n_i = len(attrs.polyps), len(attrs.instruments)
    caps = [
        f"Generate an image from a {attrs.procedure} procedure.",
        "Generate an image containing text." if attrs.has_text else "Generate an image not containing text.",
        "Generate an image containing a green/black box artefact."
        if attrs.box_artefact
        else "Generate an image not containing a green/black box artefact.",
        f"Generate an image with {_count_phrase(n_p, 'polyp', 'polyps')}.",
        f"Generate an image with {_count_phrase(n_p, 'finding', 'findings')}.",  # polyps are the only finding drawn
        f"Generate an image with {_count_phrase(n_i, 'instrument', 'instruments')}.",
    ]
    locations = locations if locations is not None else scene_locations(attrs)
    if n_p:
        caps.append("Generate an image containing a polyp.")
        sizes = [s for s in POLYP_SIZES if any(p.size == s for p in attrs.polyps)]
        if len(sizes) == 1:
            caps.append(f"Generate an image with a polyp of size {sizes[0]}.")
        else:
            caps.append(f"Generate an image with polyps of size {_join(sizes)}.")
        paris = [t for t in PARIS_TYPES if any(p.paris == t for p in attrs.polyps)]
        if len(paris) == 1:
            caps.append(f"Generate a polyp of type paris {paris[0]}.")
        else:
            caps.append(f"Generate polyps of type {_join(['paris ' + t for t in paris])}.")
        colors = [c for c in ("pink", "red") if any(c in POLYP_TONES[p.tone] for p in attrs.polyps)]
        noun = "color" if len(colors) == 1 else "colors"
        caps.append(f"Generate an image with an abnormality with the {noun} {_join(colors)}.")
        if locations["abnormality"]:
            caps.append(f"Generate an image with an an abnormality located in the {_join(locations['abnormality'])}.")
    if n_i:
        kinds = [k for k in INSTRUMENTS if any(ins.kind == k for ins in attrs.instruments)]
        caps.append(f"Generate an image containing {'and'.join(kinds)}.")
        if locations["instrument"]:
            caps.append(f"Generate an image with an an instrument located in the {_join(locations['instrument'])}.")
    return caps


def choose_caption(captions: Sequence[str], rng: np.random.Generator) -> str:
    """One caption, uniformly (each image-prompt row of the real data is one such fact)."""
    return captions[int(rng.integers(len(captions)))]
