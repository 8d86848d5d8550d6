"""What the adherence machinery needs from a detector, and the default one.

A detector turns images into what they show, in the fact vocabulary of the prompt grammar
(:func:`msdm.synthetic.prompt_facts.parse_prompt`): ``detect(images) -> [{"box": bool, "text": bool, "instrument":
bool, "instrument_kinds": tuple, "polyp": bool, "polyp_count": int, "polyp_sizes": tuple, "polyp_locations": tuple,
"procedure": str}, ...]``, one dict per image (a key it cannot see may be missing: that attribute is then not scored).
Its ``instrument_kinds`` and ``max_polyps`` say what it can tell apart: a prompt asking for more is not scored.

The synthetic scenes' detector is :class:`msdm.synthetic.scene_detector.SceneDetector` (the default); a detector for
real frames plugs in by passing it as ``detector=`` to :class:`~msdm.metrics.adherence.metric.AdherenceMetric`,
:func:`~msdm.metrics.adherence.paired.paired_adherence`, :func:`~msdm.metrics.adherence.paired.adherence_report`,
:func:`~msdm.metrics.adherence.vae_check.detector_agreement` or the adherence callbacks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

__all__ = ["Detector", "default_detector"]


@runtime_checkable
class Detector(Protocol):
    """Images (float [N, 3, H, W] in [0, 1], or a list of PIL images / uint8 arrays) → facts they show."""

    instrument_kinds: Sequence[str]  # the instrument kinds it can tell apart
    max_polyps: int  # the largest polyp count it can report

    def detect(self, images) -> list[dict]: ...


def default_detector(detector: Detector | None = None) -> Detector:
    """``detector``, else the synthetic scenes' :class:`~msdm.synthetic.scene_detector.SceneDetector` (shipped weights)."""
    if detector is not None:
        return detector
    from msdm.synthetic.scene_detector import SceneDetector

    return SceneDetector()
