"""Procedural colonoscopy-like scenes with MEDVQA-GI captions derived from their true attributes.

The embedded default dataset of msdm (foundation issue, "Data for now"): it needs no download, it is deterministic
by seed, and because every caption is computed from the attributes the scene was rendered from, prompt adherence
of a generator trained on it can be checked against ground truth (see the detectors at the end of this file).

What a scene holds (all sampled by :func:`sample_attributes`, drawn by :func:`render_scene`):

* mucosa: pink-orange colour field (colours measured on the Kvasir-SEG sample in ``../shared/data``: median RGB of
  mucosa ~ (168, 90, 63), polyps ~ (217, 118, 83)), haustral folds (colonoscopy: rings around the lumen;
  gastroscopy: radial rugae, pinker palette), a dark lumen in or off the centre, light falling off with depth,
  wet specular speckles;
* 0-3 polyps: lit domes (Paris Is), flat plateaus (IIa) or heads on a stalk (Ip), of the four MEDVQA size classes,
  placed in one of the nine MEDVQA location cells, slightly redder or paler than the mucosa;
* 0-2 instruments entering from an edge: tube, biopsy forceps (blue sheath, metal jaws), polyp snare (sheath and
  wire loop);
* the black octagonal frame of the endoscope image, and optionally the lower-left green/black box (the ScopeGuide
  inset of HyperKvasir images) and white on-screen-display text at the top left.

Everything here is numpy + PIL (+ torch for the Dataset); no Lightning. Rendering is vectorised: a scene is a few
dozen whole-array operations, so its cost is dominated by memory traffic (see docs/synthetic-data.md for speed).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, default_collate

# =====================================================================================================================
# Vocabulary of the MEDVQA-GI 2024 prompts (../shared/data/prompts/medvqa_gi_2024_dev_prompt_counts.csv)
# =====================================================================================================================

#: The nine location cells, row-major (used for sampling positions and for the 3x3 grid geometry).
LOCATIONS: tuple[str, ...] = (
    "upper-left", "upper-center", "upper-right",
    "center-left", "center", "center-right",
    "lower-left", "lower-center", "lower-right",
)  # fmt: skip
#: The order in which the real prompts list locations ("... located in the center, upper-left, upper-right,
#: lower-left, lower-right, center-left, center-right, upper-center and lower-center.").
CAPTION_LOCATION_ORDER: tuple[str, ...] = (
    "center", "upper-left", "upper-right", "lower-left", "lower-right",
    "center-left", "center-right", "upper-center", "lower-center",
)  # fmt: skip
#: Polyp size classes, in the order the real prompts list them ("polyps of size < 5mm and 5-10mm").
POLYP_SIZES: tuple[str, ...] = ("< 5mm", "5-10mm", "11-20mm", ">20mm")
#: Polyp radius (fraction of the image width) drawn uniformly in this range per size class.
POLYP_RADIUS: dict[str, tuple[float, float]] = {
    "< 5mm": (0.06, 0.08),
    "5-10mm": (0.09, 0.12),
    "11-20mm": (0.13, 0.17),
    ">20mm": (0.18, 0.24),
}
#: Paris classes, in the order the real prompts list them ("polyps of type paris ip and paris is",
#: "paris is and paris iia", "paris ip and paris iia").
PARIS_TYPES: tuple[str, ...] = ("ip", "is", "iia")
#: Polyp tones and the colour words they caption as ("an abnormality with the color pink" / "colors pink and red").
POLYP_TONES: dict[str, tuple[str, ...]] = {"pink": ("pink",), "red": ("pink", "red")}
#: Instrument kinds, in the order the real prompts concatenate them ("polyp snareandtube", "biopsy forcepsandtube",
#: "polyp snareandmetal clip", "metal clipandtube": snare < forceps < metal clip < tube). No metal clip is drawn.
INSTRUMENTS: tuple[str, ...] = ("polyp snare", "biopsy forceps", "tube")
PROCEDURES: tuple[str, ...] = ("colonoscopy", "gastroscopy")

# =====================================================================================================================
# Fixed overlay geometry (fractions of width/height; x right, y down). The detectors look in these regions.
# =====================================================================================================================

#: Black corners of the octagonal endoscope frame: a pixel is black where x + y < FRAME_CUT (and mirrored).
FRAME_CUT = 0.17
#: The green/black box (ScopeGuide inset) in the lower-left corner, as (x0, y0, x1, y1).
BOX_RECT = (0.0, 0.665, 0.265, 1.0)
#: Where the on-screen-display text may be drawn, as (x0, y0, x1, y1). Specular highlights and instruments are kept
#: out of it, so white pixels there mean text.
TEXT_RECT = (0.015, 0.07, 0.33, 0.45)


# =====================================================================================================================
# Attributes
# =====================================================================================================================


@dataclass(frozen=True)
class Polyp:
    location: str  # the MEDVQA location cell the centre was sampled in (the caption uses the rendered mask instead)
    center: tuple[float, float]  # (x, y) as fractions of width / height
    radius: float  # head radius, fraction of the width; drawn from POLYP_RADIUS[size]
    size: str  # one of POLYP_SIZES
    paris: str  # one of PARIS_TYPES: "is" dome, "ip" head on a stalk, "iia" flat plateau
    tone: str  # one of POLYP_TONES: "pink" paler than the mucosa, "red" redder
    aspect: float  # minor/major axis ratio of the outline, 0.75-1
    angle: float  # orientation of the major axis, radians
    stalk_angle: float  # direction of the stalk (only "ip"), radians


@dataclass(frozen=True)
class Instrument:
    kind: str  # one of INSTRUMENTS
    entry_angle: float  # where it enters, as an angle around the image centre (radians; 0 = right, pi/2 = bottom)
    reach: float  # distance of the tip from the image centre (fraction of the width); small = reaches the centre
    width: float  # shaft width where it enters the image (fraction of the width); it narrows towards the tip
    tip_offset: float  # sideways shift of the tip, making the shaft point slightly off the centre (fraction)


@dataclass(frozen=True)
class SceneAttributes:
    procedure: str  # "colonoscopy" or "gastroscopy": changes palette and fold pattern
    polyps: tuple[Polyp, ...]  # 0-3 polyps
    instruments: tuple[Instrument, ...]  # 0-2 instruments
    box_artefact: bool  # the lower-left green/black box is drawn
    text_lines: tuple[str, ...]  # on-screen-display lines at the top left; empty = no text
    lumen_center: tuple[float, float]  # (x, y) of the dark lumen; may lie outside [0, 1] (camera facing a wall)
    lumen_radius: float  # radius of the dark hole (fraction of the width)
    light_falloff: float  # distance from the lumen over which the light reaches full strength (fraction)

    @property
    def has_text(self) -> bool:
        return len(self.text_lines) > 0

    def to_dict(self) -> dict:
        """Plain nested dict (JSON-friendly), plus the derived counts."""
        d = dataclasses.asdict(self)
        d["num_polyps"] = len(self.polyps)
        d["num_instruments"] = len(self.instruments)
        d["has_text"] = self.has_text
        return d


@dataclass
class SceneDistribution:
    """Probabilities of :func:`sample_attributes` (defaults near the MEDVQA-GI 2024 dev-set prompt frequencies)."""

    p_gastroscopy: float = 0.25  # real: 503 gastroscopy vs 1497 colonoscopy prompts
    polyp_count_weights: tuple[float, ...] = (0.3, 0.45, 0.17, 0.08)  # P(0, 1, 2, 3 polyps)
    size_weights: tuple[float, ...] = (0.2, 0.3, 0.3, 0.2)  # P(size class) in POLYP_SIZES order
    paris_weights: tuple[float, ...] = (0.25, 0.5, 0.25)  # P(paris type) in PARIS_TYPES order
    p_red_polyp: float = 0.5  # P(tone "red"), else "pink"
    instrument_count_weights: tuple[float, ...] = (0.65, 0.3, 0.05)  # P(0, 1, 2 instruments)
    instrument_weights: tuple[float, ...] = (0.25, 0.25, 0.5)  # P(kind) in INSTRUMENTS order
    p_box: float = 0.35  # real: 679 with vs 1321 without the box
    p_text: float = 0.7  # real: 1589 with vs 411 without text (lowered so "not containing text" is learnable)
    p_wall_view: float = 0.15  # P(lumen outside the frame: the camera looks at a wall)


_CELL_CENTERS = {name: ((i % 3 + 0.5) / 3, (i // 3 + 0.5) / 3) for i, name in enumerate(LOCATIONS)}


def sample_attributes(rng: np.random.Generator, dist: SceneDistribution | None = None) -> SceneAttributes:
    """Draw a scene. Polyps never overlap each other and stay >= 60 % visible (not hidden by frame, box or tools)."""
    dist = dist or SceneDistribution()
    procedure = "gastroscopy" if rng.random() < dist.p_gastroscopy else "colonoscopy"
    box = bool(rng.random() < dist.p_box)
    text_lines = _sample_text_lines(rng) if rng.random() < dist.p_text else ()
    if rng.random() < dist.p_wall_view:
        a = rng.uniform(0, 2 * np.pi)
        lumen_center = (0.5 + 0.75 * np.cos(a), 0.5 + 0.75 * np.sin(a))
    else:
        lumen_center = (rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8))
    lumen_center = (float(lumen_center[0]), float(lumen_center[1]))
    lumen_radius = float(rng.uniform(0.05, 0.12))
    light_falloff = float(rng.uniform(0.3, 0.5))

    n_polyps = int(rng.choice(len(dist.polyp_count_weights), p=_normed(dist.polyp_count_weights)))
    polyps = _sample_polyps(rng, n_polyps, box, dist)
    n_instr = int(rng.choice(len(dist.instrument_count_weights), p=_normed(dist.instrument_count_weights)))
    instruments = _sample_instruments(rng, n_instr, polyps, box, dist)
    return SceneAttributes(
        procedure=procedure,
        polyps=polyps,
        instruments=instruments,
        box_artefact=box,
        text_lines=text_lines,
        lumen_center=lumen_center,
        lumen_radius=lumen_radius,
        light_falloff=light_falloff,
    )


def _normed(w: Sequence[float]) -> np.ndarray:
    w = np.asarray(w, dtype=float)
    return w / w.sum()


def _sample_polyps(rng, n, box, dist) -> tuple[Polyp, ...]:
    if n == 0:
        return ()
    cells = [c for c in LOCATIONS if not (box and c == "lower-left")]  # the box would hide it
    weights = _normed([2.0 if c == "center" else 1.0 for c in cells])  # real abnormalities are mostly central
    for attempt in range(60):
        chosen = rng.choice(len(cells), size=n, replace=False, p=weights)
        polyps = []
        for ci in chosen:
            size_idx = int(rng.choice(len(POLYP_SIZES), p=_normed(dist.size_weights)))
            if attempt >= 30:  # crowded: shrink towards smaller classes until they fit
                size_idx = min(size_idx, max(0, 3 - (attempt - 30) // 10))
            size = POLYP_SIZES[size_idx]
            cx, cy = _CELL_CENTERS[cells[ci]]
            polyps.append(
                Polyp(
                    location=cells[ci],
                    center=(float(cx + rng.uniform(-0.09, 0.09)), float(cy + rng.uniform(-0.09, 0.09))),
                    radius=float(rng.uniform(*POLYP_RADIUS[size])),
                    size=size,
                    paris=PARIS_TYPES[int(rng.choice(3, p=_normed(dist.paris_weights)))],
                    tone="red" if rng.random() < dist.p_red_polyp else "pink",
                    aspect=float(rng.uniform(0.75, 1.0)),
                    angle=float(rng.uniform(0, np.pi)),
                    stalk_angle=float(rng.uniform(0, 2 * np.pi)),
                )
            )
        if _polyps_ok(polyps, box):
            return tuple(polyps)
    return ()  # practically unreachable with <= 3 polyps; an empty scene is still a true scene


def _polyps_ok(polyps, box) -> bool:
    for i, p in enumerate(polyps):
        for q in polyps[i + 1 :]:
            reach_p = p.radius * (2.2 if p.paris == "ip" else 1.15)  # the stalk or the flat rim adds extent
            reach_q = q.radius * (2.2 if q.paris == "ip" else 1.15)
            if np.hypot(p.center[0] - q.center[0], p.center[1] - q.center[1]) < reach_p + reach_q + 0.02:
                return False
    u, v = _grid(_LAYOUT_SIZE)
    keep = _visible_region(_LAYOUT_SIZE, box)
    for p in polyps:
        alpha = _polyp_field(p, u, v, _LAYOUT_SIZE)[0] > 0.5
        if alpha.sum() == 0 or (alpha & keep).sum() < 0.6 * alpha.sum():
            return False
    return True


def _sample_instruments(rng, n, polyps, box, dist) -> tuple[Instrument, ...]:
    if n == 0:
        return ()
    u, v = _grid(_LAYOUT_SIZE)
    keep = _visible_region(_LAYOUT_SIZE, box)
    text_area = _fixed_masks(_LAYOUT_SIZE)["text"]
    polyp_alpha = [(_polyp_field(p, u, v, _LAYOUT_SIZE)[0] > 0.5) & keep for p in polyps]
    for _ in range(40):
        if n == 1:
            kinds = [int(rng.choice(len(INSTRUMENTS), p=_normed(dist.instrument_weights)))]
        else:  # the real pairs always include a tube or a clip: "polyp snareandtube", "biopsy forcepsandtube"
            kinds = [int(rng.integers(2)), INSTRUMENTS.index("tube")]
        instruments = []
        for k in kinds:
            # Real instruments enter mostly from the lower right (the working channel sits at ~5 o'clock);
            # never through the top-left text area: angles from -50 to 165 degrees (0 = right, 90 = bottom).
            if rng.random() < 0.65:
                a = rng.uniform(15, 100)
            else:
                a = rng.uniform(-50, 165)
            kind = INSTRUMENTS[k]
            width = {"tube": (0.08, 0.12), "biopsy forceps": (0.05, 0.07), "polyp snare": (0.045, 0.06)}[kind]
            instruments.append(
                Instrument(
                    kind=kind,
                    entry_angle=float(np.deg2rad(a)),
                    reach=float(rng.uniform(0.05, 0.32)),
                    width=float(rng.uniform(*width)),
                    tip_offset=float(rng.uniform(-0.08, 0.08)),
                )
            )
        masks = [_instrument_field(ins, u, v, _LAYOUT_SIZE)[0] > 0.5 for ins in instruments]
        union = np.logical_or.reduce(masks)
        visible_tools = all((m & keep).sum() > 20 for m in masks)
        in_text = (union & text_area).any()
        polyps_visible = all((a & ~union).sum() >= 0.6 * max(a.sum(), 1) for a in polyp_alpha)
        if visible_tools and not in_text and polyps_visible:
            return tuple(instruments)
    return ()


def _sample_text_lines(rng) -> tuple[str, ...]:
    """Endoscope on-screen display: date, time and a few status fields (as on Kvasir / HyperKvasir frames)."""
    lines = [
        f"{rng.integers(1, 29):02d}/{rng.integers(1, 13):02d}/{rng.integers(2010, 2017)}",
        f"<{rng.integers(0, 2):02d}:{rng.integers(0, 60):02d}:{rng.integers(0, 60):02d}>",
    ]
    extra = [
        "CVP:" + str(rng.integers(1, 9)),
        "Q:N",
        "EX:A" + str(rng.integers(1, 6)),
        "GA:0" + str(rng.integers(1, 9)),
    ]
    for i in rng.permutation(len(extra))[: rng.integers(0, 3)]:
        lines.append(extra[int(i)])
    return tuple(lines)


# =====================================================================================================================
# Geometry: every shape as a per-pixel field over the unit square (shared by rendering and caption locations)
# =====================================================================================================================

_LAYOUT_SIZE = 48  # resolution at which locations and visibility are measured (resolution-independent captions)


@functools.lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates ``u`` (x) and ``v`` (y) in [0, 1], shape [size, size], read-only."""
    c = (np.arange(size, dtype=np.float32) + 0.5) / size
    u, v = np.meshgrid(c, c)
    u.flags.writeable = False
    v.flags.writeable = False
    return u, v


def _u(rng: np.random.Generator, low: float, high: float) -> float:
    """A uniform draw as a Python float (a NumPy float64 scalar would silently promote float32 arrays)."""
    return float(rng.uniform(low, high))


def _smoothstep(e0, e1, x):
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _frame_mask(u, v) -> np.ndarray:
    """True inside the octagonal endoscope frame."""
    c = FRAME_CUT
    return (u + v >= c) & ((1 - u) + v >= c) & (u + (1 - v) >= c) & ((1 - u) + (1 - v) >= c)


def _rect_mask(u, v, rect) -> np.ndarray:
    x0, y0, x1, y1 = rect
    return (u >= x0) & (u < x1) & (v >= y0) & (v < y1)


@functools.lru_cache(maxsize=8)
def _fixed_masks(size: int) -> dict[str, np.ndarray]:
    """The frame (inside of the octagon), box and text regions at ``size``, read-only."""
    u, v = _grid(size)
    masks = {"frame": _frame_mask(u, v), "box": _rect_mask(u, v, BOX_RECT), "text": _rect_mask(u, v, TEXT_RECT)}
    for m in masks.values():
        m.flags.writeable = False
    return masks


def _visible_region(size: int, box: bool) -> np.ndarray:
    """Where scene content can be seen: inside the frame and, when drawn, outside the box."""
    m = _fixed_masks(size)
    return m["frame"] & ~m["box"] if box else m["frame"]


def _segment_coords(u, v, p0, p1):
    """Position along the segment p0->p1 (t in [0, 1], clipped) and signed perpendicular distance (unit-square units)."""
    p0, p1 = (float(p0[0]), float(p0[1])), (float(p1[0]), float(p1[1]))  # Python floats keep arrays float32
    dx, dy = p1[0] - p0[0], p1[1] - p0[1]
    length2 = max(dx * dx + dy * dy, 1e-12)
    t = np.clip(((u - p0[0]) * dx + (v - p0[1]) * dy) / length2, 0.0, 1.0)
    ex, ey = u - (p0[0] + t * dx), v - (p0[1] + t * dy)
    dist = np.sqrt(ex * ex + ey * ey)
    side = np.sign(ex * -dy + ey * dx)  # which side of the axis: for cylinder shading
    return t, dist * np.where(side == 0, 1.0, side)


def _polyp_field(p: Polyp, u, v, size: int) -> tuple[np.ndarray, np.ndarray]:
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
        _, d = _segment_coords(u, v, p.center, base)
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


def _instrument_axis(ins: Instrument):
    c, s = np.cos(ins.entry_angle), np.sin(ins.entry_angle)
    entry = (0.5 + 0.85 * c, 0.5 + 0.85 * s)  # outside the image: the shaft comes in across the edge
    tip = (0.5 + ins.reach * c - ins.tip_offset * s, 0.5 + ins.reach * s + ins.tip_offset * c)
    return entry, tip


def _instrument_field(ins: Instrument, u, v, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Coverage alpha [H, W] and shaded colour [H, W, 3] of one instrument."""
    entry, tip = _instrument_axis(ins)
    t, d = _segment_coords(u, v, entry, tip)
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
                _, dj = _segment_coords(u, v, a0, a1)
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


def _noise(rng: np.random.Generator, grid: int, size: int) -> np.ndarray:
    """Smooth value noise in ~[0, 1]: a random ``grid`` x ``grid`` lattice upsampled bicubically to ``size``.

    The lattice is the same at every output size, so one seed gives the same scene at 64 px and at 256 px.
    """
    lattice = rng.random((grid, grid), dtype=np.float32)
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
    u, v = _grid(size)
    pal = _PALETTES[attrs.procedure]

    # --- mucosa colour: blotchy mix between the pale and the red palette colour ----------------------------------
    n_large, n_mid = _noise(rng, 5, size), _noise(rng, 13, size)
    tint = _u(rng, -0.25, 0.25)  # scene-wide: some scenes redder, some paler
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
    light *= _u(rng, 0.9, 1.08)

    # --- folds: haustral rings around the lumen (colon) or radial rugae (stomach) --------------------------------
    warp2 = _noise(rng, 7, size) - 0.5
    if attrs.procedure == "colonoscopy":
        freq = _u(rng, 1.4, 2.2)  # folds per e-fold of distance: spacing grows outwards, as in perspective
        phase = 2 * np.pi * freq * np.log(dist / attrs.lumen_radius + 0.35) + 2.5 * warp2 + _u(rng, 0, 6.3)
    else:
        n_rugae = int(rng.integers(6, 11))
        phase = n_rugae * np.arctan2(dy, dx) + 9.0 * warp2 + 3.0 * np.log(dist + 0.05)
    arcs = _smoothstep(0.35, 0.6, _noise(rng, 5, size))  # folds are crescents, not full rings
    amp = arcs * _smoothstep(attrs.lumen_radius, 2.5 * attrs.lumen_radius, dist) * _u(rng, 0.7, 1.0)
    crease = 0.5 + 0.5 * np.cos(phase)
    crease *= crease
    crease *= crease  # ^4: a dark band on the far side of each fold
    ridge = np.sin(phase)
    shade = 1 + 0.2 * amp * ridge - 0.3 * amp * crease

    img = color * (light * shade)[..., None]
    hole = _smoothstep(attrs.lumen_radius, 0.45 * attrs.lumen_radius, dist)[..., None]
    img += hole * (np.asarray(pal.lumen, np.float32) - img)

    # --- wet specular speckles on the near wall and on fold ridges -----------------------------------------------
    speckle = _noise(rng, 56, size)
    near = _smoothstep(0.45, 0.75, light)
    on_crest = 0.35 + 0.65 * _smoothstep(0.0, 0.8, amp * ridge)  # wet fold crests catch most of the light
    spec = _smoothstep(0.93, 0.96, speckle) * near * on_crest
    no_spec = _fixed_masks(size)["text"]  # keeps white pixels in the text area meaning text

    # --- polyps ---------------------------------------------------------------------------------------------------
    instances = np.zeros((size, size), dtype=np.int32)
    pit = _noise(rng, 48, size)  # surface pattern of the polyps
    for i, p in enumerate(attrs.polyps):
        win = _window(p.center, 2.5 * p.radius * (1.2 if p.paris == "iia" else 1.0), size)  # all it touches
        alpha, height = _polyp_field(p, u[win], v[win], size)
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
        gloss = _smoothstep(0.97, 1.0, diffuse) * 0.6 + _smoothstep(0.88, 0.92, speckle[win]) * (diffuse > 0.85)
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
        alpha, irgb = _instrument_field(ins, u, v, size)
        img += alpha[..., None] * (irgb - img)
        instrument |= alpha > 0.5
    instances[instrument] = 0

    # --- frame, box, text -----------------------------------------------------------------------------------------
    frame = _fixed_masks(size)["frame"]
    img[~frame] = 0
    box = _fixed_masks(size)["box"].copy() if attrs.box_artefact else np.zeros((size, size), dtype=bool)
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
    pts = [(_u(rng, 0.35, 0.65), 1.05)]
    heading = -np.pi / 2 + _u(rng, -0.4, 0.4)
    for _ in range(6):
        heading += _u(rng, -1.0, 1.0)
        nx = min(max(pts[-1][0] + 0.22 * np.cos(heading), 0.15), 0.85)
        ny = min(max(pts[-1][1] + 0.22 * np.sin(heading), 0.15), 0.9)
        pts.append((nx, ny))
    dist = np.full((h, w), np.inf, dtype=np.float32)
    for a, b in zip(pts[:-1], pts[1:]):
        _, d = _segment_coords(xs, ys, a, b)
        dist = np.minimum(dist, np.abs(d))
    half = max(0.075, 1.6 / min(h, w))  # tube half-width in box units (>= ~1.6 px)
    s = np.clip(dist / half, 0, 1)
    tube = (dist < half).astype(np.float32) * (0.45 + 0.55 * np.sqrt(1 - s * s))
    green = np.array([0.18, 0.85, 0.30], np.float32)
    box = np.zeros((h, w, 3), np.float32) + np.array([0.01, 0.015, 0.01], np.float32)
    box = box + tube[..., None] * green
    img[y0:y1, x0:x1] = box
    return img


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
    u, v = _grid(_LAYOUT_SIZE)
    keep = _visible_region(_LAYOUT_SIZE, attrs.box_artefact)
    tools = np.zeros(u.shape, dtype=bool)
    for ins in attrs.instruments:
        tools |= _instrument_field(ins, u, v, _LAYOUT_SIZE)[0] > 0.5
    polyps = np.zeros(u.shape, dtype=bool)
    for p in attrs.polyps:
        polyps |= _polyp_field(p, u, v, _LAYOUT_SIZE)[0] > 0.5
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


# =====================================================================================================================
# Detectors: attribute checks on any image (a render, or a generated sample) for prompt adherence
# =====================================================================================================================


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
    """(fraction of dark-or-green pixels, fraction of green pixels) inside the lower-left box region."""
    r = _region(_as_float_hwc(img), BOX_RECT, margin=0.08)
    mx = r.max(axis=-1)
    green = (r[..., 1] > 0.25) & (r[..., 1] > 1.4 * r[..., 0]) & (r[..., 1] > 1.4 * r[..., 2])
    dark = mx < 0.12
    return float((dark | green).mean()), float(green.mean())


def has_box_artefact(img, min_dark_or_green: float = 0.75, min_green: float = 0.02) -> bool:
    """True when the lower-left corner is a black box with green in it (mucosa is never green; a dark lumen is
    dark but has no green, a black frame corner covers only ~13 % of the region)."""
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
    region = _frame_mask(u, v) & ~_rect_mask(u, v, BOX_RECT) & ~_rect_mask(u, v, TEXT_RECT)
    r, b, mx = a[..., 0], a[..., 2], a.max(axis=-1)
    bluish = (b >= 0.85 * r) & (mx > 0.25) & (mx < 0.85)
    return float((bluish & region).sum() / max(region.sum(), 1))


def has_instrument(img, min_fraction: float = 0.003) -> bool:
    """True when at least ``min_fraction`` of the frame shows instrument colours."""
    return instrument_score(img) >= min_fraction


# =====================================================================================================================
# Dataset
# =====================================================================================================================

_SPLITS = {"train": 0, "val": 1, "test": 2}


class SyntheticGIDataset(Dataset):
    """``num_samples`` synthetic scenes; sample ``i`` of a split is a pure function of ``(seed, split, i)``.

    Items are ``{"pixel_values": float [3, H, W] in [-1, 1], "caption": str, "id": str, "attributes": dict}``.
    The caption is one of the scene's true captions, chosen by ``(seed, split, i, epoch)``: ``dataset[i]`` uses the
    epoch set with :meth:`set_epoch`, ``dataset[(i, epoch)]`` an explicit one (what
    :class:`msdm.data.epoch_sampler.EpochShuffleSampler` yields, which also works with worker processes). Use
    :func:`synthetic_collate` as ``collate_fn`` so the nested attribute dicts stay a list.
    """

    def __init__(
        self,
        num_samples: int = 512,
        resolution: int = 64,
        seed: int = 0,
        split: str = "train",
        cache: bool = True,
        distribution: SceneDistribution | None = None,
    ):
        if split not in _SPLITS:
            raise ValueError(f"split must be one of {sorted(_SPLITS)}, got {split!r}")
        self.num_samples = int(num_samples)
        self.resolution = int(resolution)
        self.seed = int(seed)
        self.split = split
        self.cache = cache  # keep rendered scenes (uint8) in memory: ~12 KB per 64 px image
        self.distribution = distribution or SceneDistribution()
        self.epoch = 0
        self._cache: dict[int, tuple[np.ndarray, list[str], dict]] = {}

    def __len__(self) -> int:
        return self.num_samples

    def set_epoch(self, epoch: int) -> None:
        """Choose captions for ``epoch`` in later ``dataset[i]`` calls (this process only; see the class doc)."""
        self.epoch = int(epoch)

    def sample_id(self, index: int) -> str:
        return f"synthetic-{self.split}-s{self.seed}-{index:06d}"

    def _rng(self, index: int, *stream: int) -> np.random.Generator:
        # Independent streams per (seed, split, index[, purpose, epoch]): splits can never share a scene.
        return np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(_SPLITS[self.split], index, *stream)))

    def scene(self, index: int) -> tuple[np.ndarray, list[str], dict]:
        """(uint8 image [H, W, 3], all true captions, attributes dict) of sample ``index``, rendered or cached."""
        if not 0 <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} samples")
        if index in self._cache:
            return self._cache[index]
        rng = self._rng(index, 0)
        attrs = sample_attributes(rng, self.distribution)
        image, _ = render_scene(attrs, self.resolution, rng)
        locations = scene_locations(attrs)
        info = attrs.to_dict()
        info.update({f"{k}_locations": v for k, v in locations.items()})
        entry = (np.asarray(image), captions_for(attrs, locations), info)
        if self.cache:
            self._cache[index] = entry
        return entry

    def caption(self, index: int, epoch: int | None = None) -> str:
        """The caption of sample ``index`` in ``epoch`` (default: the epoch set with :meth:`set_epoch`)."""
        return self._choose(index, self.scene(index)[1], self.epoch if epoch is None else int(epoch))

    def _choose(self, index: int, captions: list[str], epoch: int) -> str:
        return choose_caption(captions, self._rng(index, 1, epoch))

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        index, epoch = (int(key[0]), int(key[1])) if isinstance(key, tuple | list) else (int(key), self.epoch)
        pixels, captions, info = self.scene(index)
        x = torch.from_numpy(pixels.copy()).permute(2, 0, 1).float().div_(127.5).sub_(1.0)
        return {
            "pixel_values": x,
            "caption": self._choose(index, captions, epoch),
            "id": self.sample_id(index),
            "attributes": info,
        }


def synthetic_collate(items: list[dict]) -> dict:
    """Default collation, except ``attributes`` stays a list of per-sample dicts (they nest variable-length lists)."""
    attributes = [it["attributes"] for it in items]
    batch = default_collate([{k: v for k, v in it.items() if k != "attributes"} for it in items])
    batch["attributes"] = attributes
    return batch


__all__ = [
    "LOCATIONS",
    "POLYP_SIZES",
    "PARIS_TYPES",
    "INSTRUMENTS",
    "PROCEDURES",
    "Polyp",
    "Instrument",
    "SceneAttributes",
    "SceneDistribution",
    "sample_attributes",
    "render_scene",
    "scene_locations",
    "captions_for",
    "choose_caption",
    "has_box_artefact",
    "box_artefact_score",
    "has_text_overlay",
    "text_overlay_score",
    "has_instrument",
    "instrument_score",
    "SyntheticGIDataset",
    "synthetic_collate",
]
