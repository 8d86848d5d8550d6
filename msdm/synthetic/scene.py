"""What a synthetic colonoscopy scene holds: the MEDVQA-GI vocabulary, the attribute dataclasses and their sampling.

A scene is fully described by :class:`SceneAttributes` (drawn by :func:`sample_attributes`); the picture is drawn by
:func:`msdm.synthetic.render.render_scene` and its true captions by :func:`msdm.synthetic.captions.captions_for`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from msdm.synthetic.geometry import LAYOUT_SIZE, fixed_masks, grid, instrument_field, polyp_field, visible_region

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
    u, v = grid(LAYOUT_SIZE)
    keep = visible_region(LAYOUT_SIZE, box)
    for p in polyps:
        alpha = polyp_field(p, u, v, LAYOUT_SIZE)[0] > 0.5
        if alpha.sum() == 0 or (alpha & keep).sum() < 0.6 * alpha.sum():
            return False
    return True


def _sample_instruments(rng, n, polyps, box, dist) -> tuple[Instrument, ...]:
    if n == 0:
        return ()
    u, v = grid(LAYOUT_SIZE)
    keep = visible_region(LAYOUT_SIZE, box)
    text_area = fixed_masks(LAYOUT_SIZE)["text"]
    polyp_alpha = [(polyp_field(p, u, v, LAYOUT_SIZE)[0] > 0.5) & keep for p in polyps]
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
        masks = [instrument_field(ins, u, v, LAYOUT_SIZE)[0] > 0.5 for ins in instruments]
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
