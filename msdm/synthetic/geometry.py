"""Geometry of the synthetic colonoscopy scenes: fixed overlay regions and every shape as a per-pixel field.

Shared by scene sampling (visibility checks), rendering, captions (locations) and the pixel detectors of
:mod:`msdm.synthetic.pixel_detectors`, which look in the same overlay regions. Coordinates are fractions of the image
width/height, x to the right, y down.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from msdm.synthetic.scene import Instrument, Polyp

#: Black corners of the octagonal endoscope frame: a pixel is black where x + y < FRAME_CUT (and mirrored).
FRAME_CUT = 0.17
#: The green/black box (ScopeGuide inset) in the lower-left corner, as (x0, y0, x1, y1).
BOX_RECT = (0.0, 0.665, 0.265, 1.0)
#: Where the on-screen-display text may be drawn, as (x0, y0, x1, y1). Specular highlights and instruments are kept
#: out of it, so white pixels there mean text.
TEXT_RECT = (0.015, 0.07, 0.33, 0.45)


LAYOUT_SIZE = 48  # resolution at which locations and visibility are measured (resolution-independent captions)


@functools.lru_cache(maxsize=8)
def grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates ``u`` (x) and ``v`` (y) in [0, 1], shape [size, size], read-only."""
    c = (np.arange(size, dtype=np.float32) + 0.5) / size
    u, v = np.meshgrid(c, c)
    u.flags.writeable = False
    v.flags.writeable = False
    return u, v


def uniform(rng: np.random.Generator, low: float, high: float) -> float:
    """A uniform draw as a Python float (a NumPy float64 scalar would silently promote float32 arrays)."""
    return float(rng.uniform(low, high))


def smoothstep(e0, e1, x):
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def frame_mask(u, v) -> np.ndarray:
    """True inside the octagonal endoscope frame."""
    c = FRAME_CUT
    return (u + v >= c) & ((1 - u) + v >= c) & (u + (1 - v) >= c) & ((1 - u) + (1 - v) >= c)


def rect_mask(u, v, rect) -> np.ndarray:
    x0, y0, x1, y1 = rect
    return (u >= x0) & (u < x1) & (v >= y0) & (v < y1)


@functools.lru_cache(maxsize=8)
def fixed_masks(size: int) -> dict[str, np.ndarray]:
    """The frame (inside of the octagon), box and text regions at ``size``, read-only."""
    u, v = grid(size)
    masks = {"frame": frame_mask(u, v), "box": rect_mask(u, v, BOX_RECT), "text": rect_mask(u, v, TEXT_RECT)}
    for m in masks.values():
        m.flags.writeable = False
    return masks


def visible_region(size: int, box: bool) -> np.ndarray:
    """Where scene content can be seen: inside the frame and, when drawn, outside the box."""
    m = fixed_masks(size)
    return m["frame"] & ~m["box"] if box else m["frame"]


def segment_coords(u, v, p0, p1):
    """Position along the segment p0->p1 (t in [0, 1], clipped) and signed perpendicular distance (unit-square units)."""
    p0, p1 = (float(p0[0]), float(p0[1])), (float(p1[0]), float(p1[1]))  # Python floats keep arrays float32
    dx, dy = p1[0] - p0[0], p1[1] - p0[1]
    length2 = max(dx * dx + dy * dy, 1e-12)
    t = np.clip(((u - p0[0]) * dx + (v - p0[1]) * dy) / length2, 0.0, 1.0)
    ex, ey = u - (p0[0] + t * dx), v - (p0[1] + t * dy)
    dist = np.sqrt(ex * ex + ey * ey)
    side = np.sign(ex * -dy + ey * dx)  # which side of the axis: for cylinder shading
    return t, dist * np.where(side == 0, 1.0, side)


def polyp_field(p: Polyp, u, v, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Coverage alpha in [0, 1] (anti-aliased over ~1 px) and height in pixels of one polyp."""
    dx, dy = u - p.center[0], v - p.center[1]
    ca, sa = np.cos(p.angle), np.sin(p.angle)
    r = p.radius * (1.2 if p.paris == "iia" else 1.0)  # flat lesions spread wider at the same size class
    xr = (dx * ca + dy * sa) / r
    yr = (-dx * sa + dy * ca) / (r * p.aspect)
    rho = np.sqrt(xr * xr + yr * yr)  # 0 at the centre, 1 on the outline
    inside = np.clip(1 - rho * rho, 0, 1)
    if p.paris == "iia":
        height = 0.3 * inside**0.25  # a low plateau with a steep rim
    else:
        height = 0.85 * np.sqrt(inside)  # a dome
    dist_px = (1 - rho) * r * p.aspect * size  # ~ distance to the outline in pixels (inside > 0)
    alpha = np.clip(dist_px + 0.5, 0, 1)
    if p.paris == "ip":
        # The stalk: a narrower cylinder from under the head outwards, lower than the head.
        base = (p.center[0] + 1.9 * r * np.cos(p.stalk_angle), p.center[1] + 1.9 * r * np.sin(p.stalk_angle))
        _, d = segment_coords(u, v, p.center, base)
        half = 0.5 * r
        s = np.clip(np.abs(d) / half, 0, 1)
        stalk_h = 0.35 * np.sqrt(1 - s * s)
        stalk_alpha = np.clip((half - np.abs(d)) * size + 0.5, 0, 1)
        height = np.maximum(height, stalk_h * stalk_alpha)
        alpha = np.maximum(alpha, stalk_alpha)
    return alpha.astype(np.float32), (height * r * size).astype(np.float32)


_INSTRUMENT_COLORS = {
    # sheath colour, tip colour
    "tube": ((0.78, 0.82, 0.86), None),  # translucent whitish plastic
    "biopsy forceps": ((0.22, 0.38, 0.78), (0.72, 0.73, 0.76)),  # blue sheath, steel jaws
    "polyp snare": ((0.62, 0.74, 0.90), (0.80, 0.80, 0.82)),  # bluish-white sheath, steel wire loop
}


def instrument_axis(ins: Instrument):
    c, s = np.cos(ins.entry_angle), np.sin(ins.entry_angle)
    entry = (0.5 + 0.85 * c, 0.5 + 0.85 * s)  # outside the image: the shaft comes in across the edge
    tip = (0.5 + ins.reach * c - ins.tip_offset * s, 0.5 + ins.reach * s + ins.tip_offset * c)
    return entry, tip


def instrument_field(ins: Instrument, u, v, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Coverage alpha [H, W] and shaded colour [H, W, 3] of one instrument."""
    entry, tip = instrument_axis(ins)
    t, d = segment_coords(u, v, entry, tip)
    half = 0.5 * ins.width * (1.3 - 0.6 * t)  # perspective: narrower towards the tip, which is farther away
    s = np.clip(d / half, -1, 1)  # position across the shaft
    alpha = np.clip((half - np.abs(d)) * size + 0.5, 0, 1)
    sheath, metal = _INSTRUMENT_COLORS[ins.kind]
    across = np.sqrt(1 - s * s)  # cylinder: bright along the axis, dark at the sides
    shine = np.exp(-(((s + 0.35) / 0.18) ** 2))  # a specular stripe along the shaft
    shade = 0.35 + 0.65 * across
    rgb = np.asarray(sheath, np.float32) * shade[..., None] + 0.45 * shine[..., None]
    if ins.kind == "tube":
        alpha = alpha * 0.9  # translucent
    if metal is not None:
        length = float(np.hypot(tip[0] - entry[0], tip[1] - entry[1]))
        direction = ((tip[0] - entry[0]) / length, (tip[1] - entry[1]) / length)
        normal = (-direction[1], direction[0])
        if ins.kind == "biopsy forceps":
            # Two open jaws: short ellipses diverging from the tip.
            metal_alpha = np.zeros_like(alpha)
            for sign in (-1, 1):
                axis = [direction[k] * np.cos(0.45) + sign * normal[k] * np.sin(0.45) for k in (0, 1)]
                a0 = (tip[0], tip[1])
                a1 = (tip[0] + axis[0] * 2.2 * ins.width, tip[1] + axis[1] * 2.2 * ins.width)
                _, dj = segment_coords(u, v, a0, a1)
                metal_alpha = np.maximum(metal_alpha, np.clip((0.32 * ins.width - np.abs(dj)) * size + 0.5, 0, 1))
        else:
            # A wire loop: an ellipse outline beyond the tip, at least ~1.2 px thick.
            loop_r = 2.6 * ins.width
            cx, cy = tip[0] + direction[0] * loop_r, tip[1] + direction[1] * loop_r
            xl = (u - cx) * direction[0] + (v - cy) * direction[1]
            yl = (u - cx) * normal[0] + (v - cy) * normal[1]
            rho = np.sqrt((xl / loop_r) ** 2 + (yl / (0.7 * loop_r)) ** 2)
            thick = max(0.012, 1.2 / size)
            metal_alpha = np.clip((thick / 2 - np.abs(rho - 1) * 0.85 * loop_r) * size + 0.5, 0, 1)
        glint = 0.75 + 0.25 * np.cos(40 * (u + v))  # a little variation along the metal
        metal_rgb = np.asarray(metal, np.float32) * glint[..., None]
        rgb = rgb * (1 - metal_alpha[..., None]) + metal_rgb * metal_alpha[..., None]
        alpha = np.maximum(alpha, metal_alpha)
    return alpha.astype(np.float32), np.clip(rgb, 0, 1).astype(np.float32)
