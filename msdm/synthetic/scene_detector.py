"""What images of synthetic scenes show: :class:`SceneDetector`, in the vocabulary of
:func:`~msdm.synthetic.prompt_facts.parse_prompt`.

The pixel detectors of :mod:`msdm.synthetic.pixel_detectors` see the overlays (box artefact, text) and instrument presence;
the learned :mod:`~msdm.synthetic.polyp_detector` sees polyps (presence, count, size classes, location cells),
instrument kinds and the procedure. Scoring against prompts is :mod:`msdm.metrics.adherence.metric`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from msdm.synthetic import pixel_detectors as detectors
from msdm.synthetic.polyp_detector import MAX_POLYPS, PolypDetector, load_polyp_detector
from msdm.synthetic.scene import CAPTION_LOCATION_ORDER, INSTRUMENTS, LOCATIONS, POLYP_SIZES, PROCEDURES

__all__ = ["PixelThresholds", "SceneDetector", "as_image_batch"]


def as_image_batch(images) -> torch.Tensor:
    """Float [B, 3, H, W] in [0, 1] from a float tensor (same), a uint8 tensor/array [B, H, W, 3], or a list of PIL
    images / uint8 arrays [H, W, 3] / float tensors [3, H, W] (all the same size)."""
    if isinstance(images, torch.Tensor):
        if images.ndim != 4:
            raise ValueError(f"images must be [B, 3, H, W], got shape {tuple(images.shape)}")
        if images.dtype == torch.uint8:
            images = images.permute(0, 3, 1, 2) if images.shape[-1] == 3 else images
            return images.float() / 255
        if images.shape[1] != 3:
            raise ValueError(f"images must be [B, 3, H, W] floats in [0, 1], got shape {tuple(images.shape)}")
        return _checked_range(images.detach().float().cpu())
    if isinstance(images, np.ndarray) and images.ndim == 4:
        return as_image_batch(torch.from_numpy(images))
    out = []
    for img in images:
        if isinstance(img, Image.Image):
            img = np.asarray(img.convert("RGB"))
        if isinstance(img, np.ndarray):
            t = torch.from_numpy(np.array(img))  # a copy: PIL arrays are read-only
            img = t.permute(2, 0, 1).float() / 255 if t.dtype == torch.uint8 else t.float()
        out.append(img.detach().float().cpu())
    if not out:
        raise ValueError("no images given")
    return _checked_range(torch.stack(out))


def _checked_range(x: torch.Tensor) -> torch.Tensor:
    # a [-1, 1] batch (the training convention) would be read silently wrong: the detectors clip to [0, 1]
    if x.numel() and (float(x.min()) < -0.02 or float(x.max()) > 1.02):
        raise ValueError(f"images must be floats in [0, 1], got values in [{float(x.min()):.2f}, {float(x.max()):.2f}]"
                         ": convert a [-1, 1] batch with (x + 1) / 2")
    return x


@dataclass
class PixelThresholds:
    """Thresholds of the pixel detectors (:mod:`msdm.synthetic.pixel_detectors`), calibrated on held-out renders and their
    reconstructions by the quickstart VAE (``bench/detector_calibration.py``, docs/metrics.md): the detectors'
    defaults, except ``instrument`` (0.003 → 0.001 of the frame: a VAE thins the shafts; 96.4 % → 99.1 % on
    reconstructions, still 100 % on renders)."""

    box_dark_or_green: float = 0.6
    box_green: float = 0.01
    text: float = 0.025
    instrument: float = 0.001


class SceneDetector:
    """What synthetic-scene images show: ``detect(images)`` → one dict per image with the keys and value types of
    :func:`~msdm.synthetic.prompt_facts.parse_prompt` (``box``, ``text``, ``instrument`` bools; ``instrument_kinds``,
    ``polyp_sizes``, ``polyp_locations`` tuples in vocabulary / caption order; ``polyp`` bool; ``polyp_count`` int;
    ``procedure`` str).

    Args:
        polyp_detector: a :class:`~msdm.synthetic.polyp_detector.PolypDetector`, a weights path, or ``"default"``
            (the weights shipped in msdm/assets).
        pixel_thresholds: thresholds of the box / text / instrument pixel detectors.
        device: where the CNN runs (CPU by default; it is small).

    Images: float tensors [B, 3, H, W] in [0, 1] at any resolution, or what :func:`as_image_batch` accepts. The pixel
    detectors look at the full resolution; the CNN at 64 px. The adherence metrics take it (or any detector with
    the same interface, :mod:`msdm.metrics.adherence.detector`) as their ``detector``.
    """

    instrument_kinds: tuple[str, ...] = INSTRUMENTS  # what the CNN's kind head tells apart
    max_polyps: int = MAX_POLYPS  # the count head's largest class

    def __init__(self, polyp_detector: PolypDetector | str | None = "default",
                 pixel_thresholds: PixelThresholds | None = None, device: str | torch.device = "cpu"):
        if polyp_detector is None or isinstance(polyp_detector, str):
            polyp_detector = load_polyp_detector(None if polyp_detector in (None, "default") else polyp_detector,
                                                 device)
        self.polyp_detector = polyp_detector.to(device)
        self.pixel_thresholds = pixel_thresholds or PixelThresholds()
        self.device = torch.device(device)

    def pixel_verdicts(self, images: torch.Tensor) -> dict[str, list[bool]]:
        """Box / text / instrument decisions of the pixel detectors for float images [B, 3, H, W] in [0, 1]."""
        t = self.pixel_thresholds
        arrays = images.permute(0, 2, 3, 1).numpy()  # [B, H, W, 3] float in [0, 1]
        box, text, instrument = [], [], []
        for a in arrays:
            dark_or_green, green = detectors.box_artefact_score(a)
            box.append(dark_or_green >= t.box_dark_or_green and green >= t.box_green)
            text.append(detectors.text_overlay_score(a) >= t.text)
            instrument.append(detectors.instrument_score(a) >= t.instrument)
        return {"box": box, "text": text, "instrument": instrument}

    @torch.no_grad()
    def detect(self, images) -> list[dict]:
        x = as_image_batch(images)
        pixel = self.pixel_verdicts(x)
        probs = self.polyp_detector.probabilities(x.to(self.device))
        cnn = self.polyp_detector.decide(probs)
        out = []
        for i in range(len(x)):
            kinds = cnn["instrument_kinds"][i]
            if pixel["instrument"][i] and not bool(kinds.any()):  # an instrument is there: name the likeliest kind
                kinds = torch.zeros_like(kinds)
                kinds[int(probs["kinds"][i].argmax())] = True
            cells = {LOCATIONS[j] for j in range(len(LOCATIONS)) if cnn["polyp_cells"][i, j]}
            out.append({
                "box": bool(pixel["box"][i]),
                "text": bool(pixel["text"][i]),
                "instrument": bool(pixel["instrument"][i]),
                "instrument_kinds": tuple(k for j, k in enumerate(INSTRUMENTS) if pixel["instrument"][i] and kinds[j]),
                "polyp": bool(cnn["polyp"][i]),
                "polyp_count": int(cnn["polyp_count"][i]),
                "polyp_sizes": tuple(s for j, s in enumerate(POLYP_SIZES) if cnn["polyp_sizes"][i, j]),
                "polyp_locations": tuple(c for c in CAPTION_LOCATION_ORDER if c in cells),
                "procedure": PROCEDURES[int(cnn["gastroscopy"][i])],
            })
        return out

    __call__ = detect
