"""Realism: how close generated images are to real ones, as Fréchet distances and the challenge's scores.

* :mod:`~msdm.metrics.realism.frechet` — the Fréchet distance (the math, checked against an independent reference);
* :mod:`~msdm.metrics.realism.features` — image loading and the feature-extractor base; the extractors themselves:
  :mod:`~msdm.metrics.realism.inception` (FID) and :mod:`~msdm.metrics.realism.biomedclip` (FBD, challenge metrics);
* :mod:`~msdm.metrics.realism.challenge` — the MEDVQA-GI challenge's Fidelity / Agreement / Diversity;
* :mod:`~msdm.metrics.realism.metric` — the same as torchmetrics metrics (DDP-safe states) for the callbacks;
* :mod:`~msdm.metrics.realism.cache` — real-image features cached on disk by a fingerprint;
* :mod:`~msdm.metrics.realism.evaluate` — ``msdm evaluate``: a generated folder against real images.

* :mod:`~msdm.metrics.realism.kid` — the kernel inception distance (unbiased MMD², fit for small n);
* :mod:`~msdm.metrics.realism.prdc` — precision / recall (Kynkäänniemi et al. 2019), density / coverage (Naeem et al.
  2020);
* :mod:`~msdm.metrics.realism.intervals` — bootstrap intervals and the sample-size stability rules;
* :mod:`~msdm.metrics.realism.figures` — every realism figure of one generated set with its n and interval;
* :mod:`~msdm.metrics.realism.set_metrics` — KID and P/R/D/C as torchmetrics metrics (DDP-safe) for the callbacks;
* :mod:`~msdm.metrics.realism.memorization` (+ ``memorization_io``, ``disguised_copies``) — does the generator copy
  its training frames: nearest training frame, calibrated copy verdict, CSV and gallery.

New realism metrics go here, one file each, with their torchmetrics form next to
:mod:`~msdm.metrics.realism.metric`.
"""
