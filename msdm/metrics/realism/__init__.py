"""Realism: how close generated images are to real ones, as Fréchet distances and the challenge's scores.

* :mod:`~msdm.metrics.realism.frechet` — the Fréchet distance (the math, checked against an independent reference);
* :mod:`~msdm.metrics.realism.features` — image loading and the feature-extractor base; the extractors themselves:
  :mod:`~msdm.metrics.realism.inception` (FID) and :mod:`~msdm.metrics.realism.biomedclip` (FBD, challenge metrics);
* :mod:`~msdm.metrics.realism.challenge` — the MEDVQA-GI challenge's Fidelity / Agreement / Diversity;
* :mod:`~msdm.metrics.realism.metric` — the same as torchmetrics metrics (DDP-safe states) for the callbacks;
* :mod:`~msdm.metrics.realism.cache` — real-image features cached on disk by a fingerprint;
* :mod:`~msdm.metrics.realism.evaluate` — ``msdm evaluate``: a generated folder against real images.

New realism metrics (KID, precision/recall, memorization, ...) go here, one file each, with their torchmetrics form
next to :mod:`~msdm.metrics.realism.metric`.
"""
