"""First-stage check: do the detector's verdicts survive a VAE round trip? (issue 10: the quickstart VAE erased the
box from 26 of 26 renders). :class:`lightning_modules.callbacks.adherence.VAECheck` runs it while the VAE trains."""

from __future__ import annotations

import numpy as np

from msdm.metrics.adherence.detector import Detector, default_detector
from msdm.metrics.adherence.metric import FACT_OF, PAIRED_ATTRIBUTES
from msdm.models.vae import reconstruct_images as vae_reconstruct  # noqa: F401 - the old name, re-exported

__all__ = ["detector_agreement", "vae_reconstruct"]


def detector_agreement(images, reconstructions, detector: Detector | None = None) -> dict[str, dict]:
    """Per attribute: ``agreement`` (the fraction of images whose detector verdict on the reconstruction equals the
    verdict on the input), and for yes/no attributes ``rate_inputs`` / ``rate_reconstructions`` (how often it fires
    on each). A first stage that keeps what the prompts name has agreement 1 for every attribute."""
    detector = default_detector(detector)
    a, b = detector.detect(images), detector.detect(reconstructions)
    if len(a) != len(b):
        raise ValueError(f"{len(a)} images but {len(b)} reconstructions")
    out = {}
    for attr, key in FACT_OF.items():
        res = {"agreement": float(np.mean([x[key] == y[key] for x, y in zip(a, b)]))}
        if attr in PAIRED_ATTRIBUTES:
            res["rate_inputs"] = float(np.mean([x[key] for x in a]))
            res["rate_reconstructions"] = float(np.mean([y[key] for y in b]))
        out[attr] = res
    return out
