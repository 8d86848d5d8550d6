"""The synthetic-scene world: procedural colonoscopy-like scenes whose every caption is true, and what reads them.

The embedded default dataset of msdm (no download, deterministic by seed) and, because each scene's attributes are
known, the ground truth prompt adherence is checked against. One concept per file:

* :mod:`~msdm.synthetic.scene` — the vocabulary (MEDVQA-GI sizes, locations, instruments, procedures), the scene
  attributes and their sampling (:class:`SceneDistribution`);
* :mod:`~msdm.synthetic.geometry` — overlay regions and shapes as fields; :mod:`~msdm.synthetic.render` — drawing;
* :mod:`~msdm.synthetic.captions` — the true captions of a scene; :mod:`~msdm.synthetic.dataset` — the Dataset;
* :mod:`~msdm.synthetic.pixel_detectors` (box, text, instrument from pixels), :mod:`~msdm.synthetic.polyp_detector`
  (the learned polyp / instrument-kind / procedure CNN and its weights), :mod:`~msdm.synthetic.scene_detector`
  (both, in the prompt-fact vocabulary: the adherence metric's detector for synthetic scenes),
  :mod:`~msdm.synthetic.train_polyp_detector` (how the shipped weights were trained);
* :mod:`~msdm.synthetic.prompt_facts` — the prompt grammar (prompt → facts; issue 20 moves it to ``msdm/facts``),
  :mod:`~msdm.synthetic.prompt_scenes` — scenes drawn for a prompt, :mod:`~msdm.synthetic.prompt_render` — renders
  that follow or contradict a prompt (the render generators of :mod:`msdm.generators.render`).

Pure numpy + PIL (+ torch for the Dataset and the CNN); no Lightning. This package imports nothing from
``msdm.data`` but the caption composer, and nothing from ``msdm.metrics``: the metrics import it.
"""

from msdm.synthetic.captions import captions_for, choose_caption, scene_locations
from msdm.synthetic.dataset import SyntheticGIDataset, synthetic_collate
from msdm.synthetic.geometry import BOX_RECT, FRAME_CUT, TEXT_RECT
from msdm.synthetic.pixel_detectors import (
    box_artefact_score,
    has_box_artefact,
    has_instrument,
    has_text_overlay,
    instrument_score,
    text_overlay_score,
)
from msdm.synthetic.render import render_scene
from msdm.synthetic.scene import (
    CAPTION_LOCATION_ORDER,
    INSTRUMENTS,
    LOCATIONS,
    PARIS_TYPES,
    POLYP_RADIUS,
    POLYP_SIZES,
    POLYP_TONES,
    PROCEDURES,
    Instrument,
    Polyp,
    SceneAttributes,
    SceneDistribution,
    sample_attributes,
)

__all__ = [
    "BOX_RECT", "CAPTION_LOCATION_ORDER", "FRAME_CUT", "INSTRUMENTS", "LOCATIONS", "PARIS_TYPES", "POLYP_RADIUS",
    "POLYP_SIZES", "POLYP_TONES", "PROCEDURES", "TEXT_RECT", "Instrument", "Polyp", "SceneAttributes",
    "SceneDistribution", "SyntheticGIDataset", "box_artefact_score", "captions_for", "choose_caption",
    "has_box_artefact", "has_instrument", "has_text_overlay", "instrument_score", "render_scene", "sample_attributes",
    "scene_locations", "synthetic_collate", "text_overlay_score",
]
