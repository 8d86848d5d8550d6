"""Drawing a synthetic colonoscopy scene (numpy + PIL, vectorised: a scene is a few dozen whole-array operations).

See :mod:`msdm.synthetic` for what a scene looks like and docs/synthetic-data.md for the measured speed.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from msdm.synthetic.geometry import (
    BOX_RECT,
    TEXT_RECT,
    fixed_masks,
    grid,
    instrument_field,
    polyp_field,
    segment_coords,
    smoothstep,
    uniform,
)
from msdm.synthetic.scene import SceneAttributes

# =====================================================================================================================
# Text overlay: a 3x5 bitmap font (no font files: identical on every machine and Pillow version)
# =====================================================================================================================

_GLYPHS = {
    "0": "111101101101111", "1": "010110010010111", "2": "111001111100111", "3": "111001111001111",
    "4": "101101111001001", "5": "111100111001111", "6": "111100111101111", "7": "111001010010010",
    "8": "111101111101111", "9": "111101111001111", "/": "001001010100100", ":": "000010000010000",
    "<": "001010100010001", ">": "100010001010100", ".": "000000000000010", "-": "000000111000000",
    "A": "010101111101101", "C": "111100100100111", "E": "111100111100111", "G": "111100101101111",
    "N": "101111111101101", "P": "111101111100100", "Q": "111101101111001", "S": "111100111001111",
    "V": "101101101101010", "X": "101101010101101", " ": "000000000000000",
}  # fmt: skip
_GLYPH_ARRAYS = {k: np.array([int(c) for c in g], dtype=bool).reshape(5, 3) for k, g in _GLYPHS.items()}


@functools.lru_cache(maxsize=256)
def _glyph(ch: str, scale: int) -> np.ndarray:
    return np.kron(_GLYPH_ARRAYS[ch], np.ones((scale, scale), dtype=bool))


def _text_mask(lines: Sequence[str], size: int) -> np.ndarray:
    """Boolean [size, size] mask of the OSD text inside TEXT_RECT; lines and characters that do not fit are cut."""
    mask = np.zeros((size, size), dtype=bool)
    if not lines:
        return mask
    scale = max(1, round(size / 128))  # glyphs 5 px tall at 64-128 px, 10 px at 256 px, ...
    x0, y0 = int(TEXT_RECT[0] * size), int(TEXT_RECT[1] * size) + 1
    x1, y1 = int(TEXT_RECT[2] * size), int(TEXT_RECT[3] * size)
    char_w, line_h = 4 * scale, 8 * scale
    for li, line in enumerate(lines):
        top = y0 + li * line_h
        if top + 5 * scale > y1:
            break
        for ci, ch in enumerate(line):
            left = x0 + ci * char_w
            if left + 3 * scale > x1:
                break
            mask[top : top + 5 * scale, left : left + 3 * scale] |= _glyph(ch, scale)
    return mask


# =====================================================================================================================
# Rendering
# =====================================================================================================================


@dataclass(frozen=True)
class _Palette:
    pale: tuple[float, float, float]  # mucosa colour at the pale end of the colour field
    red: tuple[float, float, float]  # mucosa colour at the red end
    lumen: tuple[float, float, float]  # colour of the dark lumen


_PALETTES = {
    # Colonoscopy: orange-pink (Kvasir-SEG mucosa median ~ (168, 90, 63) after lighting).
    "colonoscopy": _Palette(pale=(0.98, 0.57, 0.38), red=(0.82, 0.32, 0.20), lumen=(0.10, 0.03, 0.02)),
    # Gastroscopy: pinker, less orange.
    "gastroscopy": _Palette(pale=(0.96, 0.64, 0.54), red=(0.86, 0.38, 0.34), lumen=(0.09, 0.03, 0.03)),
}


def _noise(rng: np.random.Generator, cells: int, size: int) -> np.ndarray:
    """Smooth value noise in ~[0, 1]: a random ``cells`` x ``cells`` lattice upsampled bicubically to ``size``.

    The lattice is the same at every output size, so one seed gives the same scene at 64 px and at 256 px.
    """
    lattice = rng.random((cells, cells), dtype=np.float32)
    return np.asarray(Image.fromarray(lattice).resize((size, size), Image.Resampling.BICUBIC))


def render_scene(
    attrs: SceneAttributes, size: int = 256, rng: np.random.Generator | None = None
) -> tuple[Image.Image, dict[str, np.ndarray]]:
    """Draw ``attrs`` as a ``size`` x ``size`` RGB image.

    ``rng`` drives only texture (colour field, folds, highlights, box inset); the content is fixed by ``attrs``.
    Returns the image and boolean masks [size, size] of what is visible: ``polyp`` (union), ``polyp_instances``
    (int, 0 = none, i + 1 = polyp i), ``instrument``, ``box``, ``text`` and ``frame`` (inside the octagon).
    """
    rng = rng if rng is not None else np.random.default_rng(0)
    u, v = grid(size)
    pal = _PALETTES[attrs.procedure]

    # --- mucosa colour: blotchy mix between the pale and the red palette colour ----------------------------------
    n_large, n_mid = _noise(rng, 5, size), _noise(rng, 13, size)
    tint = uniform(rng, -0.25, 0.25)  # scene-wide: some scenes redder, some paler
    t = np.clip(0.5 + tint + 1.3 * (n_large - 0.5) + 0.7 * (n_mid - 0.5), 0, 1)[..., None]
    pale, red = np.asarray(pal.pale, np.float32), np.asarray(pal.red, np.float32)
    color = pale + t * (red - pale)
    # Thin vessels: sharp ridges of mid-frequency noise, a little darker and redder (visible from ~128 px up).
    vessels = 1 - np.abs(2 * _noise(rng, 22, size) - 1)
    vessels *= vessels  # ^2
    vessels *= vessels  # ^4
    vessels *= vessels  # ^8
    vessels *= vessels  # ^16: only the ridge lines survive
    color *= 1 - 0.2 * vessels[..., None] * np.array([0.2, 0.8, 0.8], np.float32)

    # --- depth: distance from the lumen, warped so the lumen and the folds are not perfect circles ---------------
    lx, ly = attrs.lumen_center
    dx, dy = u - lx, v - ly
    warp = _noise(rng, 6, size) - 0.5
    dist = np.sqrt(dx * dx + dy * dy) * (1 + 0.5 * warp)
    # The endoscope carries its own light: far (towards the lumen) is dark, the near wall is bright.
    x = dist / attrs.light_falloff
    light = 0.14 + 0.86 * (1 - np.exp(-x * np.sqrt(x)))
    r = np.minimum(np.hypot(u - 0.5, v - 0.5) / 0.7, 1)
    light *= 1 - 0.22 * r * r * r  # lens vignetting
    light *= uniform(rng, 0.9, 1.08)

    # --- folds: haustral rings around the lumen (colon) or radial rugae (stomach) --------------------------------
    warp2 = _noise(rng, 7, size) - 0.5
    if attrs.procedure == "colonoscopy":
        freq = uniform(rng, 1.4, 2.2)  # folds per e-fold of distance: spacing grows outwards, as in perspective
        phase = 2 * np.pi * freq * np.log(dist / attrs.lumen_radius + 0.35) + 2.5 * warp2 + uniform(rng, 0, 6.3)
    else:
        n_rugae = int(rng.integers(6, 11))
        phase = n_rugae * np.arctan2(dy, dx) + 9.0 * warp2 + 3.0 * np.log(dist + 0.05)
    arcs = smoothstep(0.35, 0.6, _noise(rng, 5, size))  # folds are crescents, not full rings
    amp = arcs * smoothstep(attrs.lumen_radius, 2.5 * attrs.lumen_radius, dist) * uniform(rng, 0.7, 1.0)
    crease = 0.5 + 0.5 * np.cos(phase)
    crease *= crease
    crease *= crease  # ^4: a dark band on the far side of each fold
    ridge = np.sin(phase)
    shade = 1 + 0.2 * amp * ridge - 0.3 * amp * crease

    img = color * (light * shade)[..., None]
    hole = smoothstep(attrs.lumen_radius, 0.45 * attrs.lumen_radius, dist)[..., None]
    img += hole * (np.asarray(pal.lumen, np.float32) - img)

    # --- wet specular speckles on the near wall and on fold ridges -----------------------------------------------
    speckle = _noise(rng, 56, size)
    near = smoothstep(0.45, 0.75, light)
    on_crest = 0.35 + 0.65 * smoothstep(0.0, 0.8, amp * ridge)  # wet fold crests catch most of the light
    spec = smoothstep(0.93, 0.96, speckle) * near * on_crest
    no_spec = fixed_masks(size)["text"]  # keeps white pixels in the text area meaning text

    # --- polyps ---------------------------------------------------------------------------------------------------
    instances = np.zeros((size, size), dtype=np.int32)
    pit = _noise(rng, 48, size)  # surface pattern of the polyps
    for i, p in enumerate(attrs.polyps):
        win = _window(p.center, 2.5 * p.radius * (1.2 if p.paris == "iia" else 1.0), size)  # all it touches
        alpha, height = polyp_field(p, u[win], v[win], size)
        # Contact shadow: darken the mucosa in a ring just outside the outline.
        d = np.hypot(u[win] - p.center[0], v[win] - p.center[1])
        ring = np.exp(-np.square((d - p.radius) / (0.35 * p.radius + 1.0 / size)))
        under = img[win] * (1 - 0.35 * ring * (1 - alpha))[..., None]
        # Normal from the height field; the light sits at the camera, a little off-axis towards the image centre.
        gy, gx = np.gradient(height)
        norm = np.sqrt(gx * gx + gy * gy + 1)
        lx_, ly_ = 0.6 * (0.5 - p.center[0]), 0.6 * (0.5 - p.center[1])
        diffuse = np.clip((1 - gx * lx_ - gy * ly_) / (norm * np.sqrt(1 + lx_ * lx_ + ly_ * ly_)), 0, 1)
        # Same mucosa underneath, shifted: "pink" paler and whiter, "red" redder.
        if p.tone == "pink":
            base = 0.85 * color[win] + 0.15 * np.array([1.0, 0.82, 0.72], np.float32)
        else:
            base = 0.6 * color[win] + 0.4 * red * np.array([1.0, 0.82, 0.8], np.float32)
        polyp_light = np.maximum(light[win], 0.9)  # it stands out from the wall, closer to the light
        shading = (0.6 + 0.55 * diffuse * diffuse) * polyp_light * (0.93 + 0.14 * (pit[win] - 0.5))  # + mottling
        prgb = base * shading[..., None]
        gloss = smoothstep(0.97, 1.0, diffuse) * 0.6 + smoothstep(0.88, 0.92, speckle[win]) * (diffuse > 0.85)
        gloss[no_spec[win]] = 0
        prgb += gloss[..., None] * (1 - prgb)
        img[win] = under + alpha[..., None] * (prgb - under)
        spec[win] *= 1 - alpha  # the polyp carries its own highlights
        instances[win][alpha > 0.5] = i + 1

    spec[no_spec] = 0
    img += spec[..., None] * (1 - img)

    # --- instruments ----------------------------------------------------------------------------------------------
    instrument = np.zeros((size, size), dtype=bool)
    for ins in attrs.instruments:
        alpha, irgb = instrument_field(ins, u, v, size)
        img += alpha[..., None] * (irgb - img)
        instrument |= alpha > 0.5
    instances[instrument] = 0

    # --- frame, box, text -----------------------------------------------------------------------------------------
    frame = fixed_masks(size)["frame"]
    img[~frame] = 0
    box = fixed_masks(size)["box"].copy() if attrs.box_artefact else np.zeros((size, size), dtype=bool)
    if attrs.box_artefact:
        img = _draw_box(img, size, rng)
    text = _text_mask(attrs.text_lines, size)
    img[text] = 0.93

    instances[~frame | box] = 0
    masks = {
        "polyp": instances > 0,
        "polyp_instances": instances,
        "instrument": instrument & frame & ~box,
        "box": box,
        "text": text,
        "frame": frame.copy(),
    }
    pixels = (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
    return Image.fromarray(pixels, "RGB"), masks


def _window(center: tuple[float, float], half: float, size: int) -> tuple[slice, slice]:
    """Pixel slices (rows, cols) of the square of half-width ``half`` around ``center``, clipped to the image."""
    x0, x1 = int(max(0, (center[0] - half) * size - 2)), int(min(size, np.ceil((center[0] + half) * size) + 2))
    y0, y1 = int(max(0, (center[1] - half) * size - 2)), int(min(size, np.ceil((center[1] + half) * size) + 2))
    return slice(y0, max(y0, y1)), slice(x0, max(x0, x1))


def _draw_box(img: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """The ScopeGuide inset: a black box with a green, shaded tube curling through it."""
    x0, y0, x1, y1 = (int(round(c * size)) for c in BOX_RECT)
    h, w = y1 - y0, x1 - x0
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    ys, xs = (ys + 0.5) / h, (xs + 0.5) / w  # box-local coordinates in [0, 1]
    # A smooth random curve from the bottom edge up and around: 7 points of a random walk.
    pts = [(uniform(rng, 0.35, 0.65), 1.05)]
    heading = -np.pi / 2 + uniform(rng, -0.4, 0.4)
    for _ in range(6):
        heading += uniform(rng, -1.0, 1.0)
        nx = min(max(pts[-1][0] + 0.22 * np.cos(heading), 0.15), 0.85)
        ny = min(max(pts[-1][1] + 0.22 * np.sin(heading), 0.15), 0.9)
        pts.append((nx, ny))
    dist = np.full((h, w), np.inf, dtype=np.float32)
    for a, b in zip(pts[:-1], pts[1:]):
        _, d = segment_coords(xs, ys, a, b)
        dist = np.minimum(dist, np.abs(d))
    half = max(0.075, 1.6 / min(h, w))  # tube half-width in box units (>= ~1.6 px)
    s = np.clip(dist / half, 0, 1)
    tube = (dist < half).astype(np.float32) * (0.45 + 0.55 * np.sqrt(1 - s * s))
    green = np.array([0.18, 0.85, 0.30], np.float32)
    box = np.zeros((h, w, 3), np.float32) + np.array([0.01, 0.015, 0.01], np.float32)
    box = box + tube[..., None] * green
    img[y0:y1, x0:x1] = box
    return img
